"""The playground page (serve.py): Gradio Blocks over a Playground, which does the work.

Five tabs: Write (a prompt, or the template's prompt field, the sampling settings, and up to four
models writing side by side as the tokens come, with a stop button), Chat (a conversation with one
model, in its chat template, the answer streaming with the Write tab's sampling and seeds; see
playground_chat.py), Arena (two answers to a prompt, blind, a vote appended to the votes file
and the leaderboard; page_arena.py and playground_arena.py), Seen in training? (a sample with the spans that occur in the model's
train.bin highlighted) and Runs (the loss curves of the loaded runs' metrics.jsonl, refreshed
every few seconds while they train, and the dataset report of their data). A bad request is a message on the page (gr.Error), never a stopped server.
Requests that use the models queue for one worker: one generation at a time, in arrival order.
"""

import time
from dataclasses import replace

import gradio as gr
import pandas as pd

from gptsuite.errors import UserError
from gptsuite.generate import SamplingConfig
from gptsuite.page_arena import ArenaTab
from gptsuite.playground import MAX_MODELS, Column, Playground
from gptsuite.playground_arena import Arena
from gptsuite.playground_chat import Reply, chat_model, reply, untuned

STREAM_EVERY = 0.1  # seconds between the page's updates while the models write; tokens in between arrive together (an update costs ~10 ms of CPU)
REFRESH_EVERY = 5.0  # seconds between looks at the runs' metrics.jsonl
MODELS = "models"  # the queue of the requests that use the models: one at a time
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts: the page works offline
# a new request closes the messages of earlier ones: an error stays until the user acts again, not after a later success
CLOSE_MESSAGES = "(...args) => { document.querySelectorAll('.toast-close').forEach((b) => b.click()); return args; }"  # runs before the request, in its event
# the plot's legend (a line per run and curve) goes below the chart, outside the box Gradio sizes for it: let the box grow
CSS = "#curves, #curves * { overflow: visible !important; } #curves { padding-bottom: 90px; }"
# a request that fails says so once, in its message: no "Error" badge left on every box it would have filled
QUIET = dict(show_progress="hidden")


def refuse(e: Exception) -> gr.Error:
    return gr.Error(str(e), duration=None, print_exception=False)


def number(value, what: str, kind=float, empty=None):
    """A number field's value (`empty` when it is empty), or a message naming the field."""
    if value is None or value == "":
        return empty
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {value!r}") from None


class Page:
    """The page's components and what its events do; build() lays them out and wires them."""

    def __init__(self, playground: Playground, defaults: SamplingConfig, arena: Arena):
        self.playground, self.defaults = playground, defaults
        self.arena = ArenaTab(self, arena)

    def build(self, notes: str = "") -> gr.Blocks:
        with gr.Blocks(title="gpt-suite playground", analytics_enabled=False) as page:
            gr.Markdown("## gpt-suite playground")
            self.note = gr.Markdown(notes, elem_id="notes")
            self.last = gr.State({})  # each model's last sample, for the Seen in training? tab
            with gr.Tab("Write"):
                self.write_tab()
            with gr.Tab("Chat"):
                self.chat_tab()
            with gr.Tab("Arena"):
                self.arena.build()
            with gr.Tab("Seen in training?"):
                self.seen_tab()
            with gr.Tab("Runs"):
                self.curves = gr.LinePlot(x="iteration", y="loss", color="curve", label="loss", height=420, elem_id="curves")
                self.reports = gr.Markdown(elem_id="reports")
                timer = gr.Timer(REFRESH_EVERY)
            self.wire(page, timer)
        return page

    def write_tab(self) -> None:
        playground, names = self.playground, list(self.playground.models)
        with gr.Row():
            self.prompt = gr.Textbox(label=playground.prompt_label(), lines=5, scale=3, elem_id="prompt")
            with gr.Column(scale=2):
                self.chosen = gr.CheckboxGroup(names, value=names[:MAX_MODELS], label=f"models side by side (up to {MAX_MODELS})", elem_id="chosen")
                with gr.Row():
                    self.other = gr.Textbox(
                        label="load a model", placeholder="a run folder (out-pubmed), a .pt file, gpt2 ... gpt2-xl, a .gguf file", scale=3, elem_id="other"
                    )
                    self.load_button = gr.Button("Load", scale=1, elem_id="load")
        self.settings = self.settings_row()
        with gr.Row():
            self.go = gr.Button("Generate", variant="primary", elem_id="generate")
            self.halt = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Row(equal_height=True):  # a pane per chosen model, named by it; each shows the prompt and what its model wrote
            self.outs = [gr.Textbox(**self.pane(names[:MAX_MODELS], i), lines=14, elem_id=f"out{i}") for i in range(MAX_MODELS)]
        self.stats = gr.Markdown(elem_id="stats")

    def settings_row(self, seed: int | None = -1, seed_label: str = "seed") -> list:
        """The sampling settings' boxes (a tab's own, with the page's starting values; seed=-1: the page's seed)."""
        playground, defaults = self.playground, self.defaults
        with gr.Row():  # a slider's label shares its line with the number box: wide enough for both
            return [
                gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="temperature (0: greedy)", scale=2, min_width=300),
                gr.Number(defaults.top_k or 0, precision=0, label="top-k (0: every token)", scale=1),
                gr.Number(defaults.top_p or 1.0, label="top-p, in (0, 1] (1: off)", scale=1),
                gr.Slider(
                    1,
                    playground.max_new_tokens,
                    value=min(defaults.max_new_tokens, playground.max_new_tokens),
                    step=1,
                    label="max new tokens",
                    scale=2,
                    min_width=300,
                ),
                gr.Number(defaults.seed if seed == -1 else seed, precision=0, label=seed_label, scale=1),
                gr.Textbox(defaults.stop.replace("\n", "\\n"), label="stop text (\\n: newline)", scale=1, min_width=170),
            ]

    @staticmethod
    def pane(names: list[str], i: int) -> dict:
        """The i-th output pane's label and visibility for these models side by side."""
        return {"label": names[i] if i < len(names) else f"model {i + 1}", "visible": i < len(names)}

    def chat_tab(self) -> None:
        names, default = list(self.playground.models), self.chat_default()
        with gr.Row():
            self.talker = gr.Dropdown(
                names, value=default, label="model", allow_custom_value=True, scale=1, elem_id="chat-model"
            )  # custom: models loaded since the page was built
            self.system = gr.Textbox(label="system message (optional)", scale=3, elem_id="system")
        self.history = gr.Chatbot(label="conversation", height=380, render_markdown=False, feedback_options=None, elem_id="history")
        with gr.Row():
            self.message = gr.Textbox(label="message (Enter sends it)", scale=4, elem_id="message")
            self.send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        with gr.Row():
            self.hush = gr.Button("Stop", variant="stop", elem_id="chat-stop")
            self.again = gr.Button("Regenerate (next seed: seed + 1)", elem_id="regenerate")
            self.clear = gr.Button("Clear", elem_id="clear")
        self.chat_note = gr.Markdown(self.chat_notes(default), elem_id="chat-note")
        with gr.Accordion("sampling settings, as in the Write tab (the seed box shows the last answer's seed)", open=False, elem_id="chat-settings"):
            self.chat_settings = self.settings_row()

    def chat_default(self) -> str | None:
        """The model the Chat tab starts with: the first tuned on conversations, else the first."""
        models = self.playground.models
        return next((n for n, m in models.items() if m.loaded.chat_template), next(iter(models), None))

    def chat_notes(self, name) -> str:
        model = self.playground.models.get(name or "")
        return untuned(model.name) if model is not None and not model.loaded.chat_template else ""

    def seen_tab(self) -> None:
        names = list(self.playground.models)
        gr.Markdown("The spans of a sample that also occur in the model's training data (train.bin): in 8-grams found there, and the longest such span.")
        with gr.Row():
            self.which = gr.Dropdown(names, value=names[0] if names else None, label="model")
            self.check = gr.Button("Check its last sample", elem_id="check")
        self.sample = gr.Textbox(label="text to check (empty: the model's last sample)", lines=5)
        self.marked = gr.HighlightedText(label="seen in training", color_map={"seen": "orange", "longest": "red"}, show_legend=True, elem_id="marked")
        self.verdict = gr.Markdown()

    def wire(self, page: gr.Blocks, timer: gr.Timer) -> None:
        models = dict(concurrency_id=MODELS, concurrency_limit=1)  # one request at a time uses the models
        event = self.go.click(
            self.write,
            [self.prompt, self.chosen, *self.settings, self.last],
            [*self.outs, self.stats, self.note, self.last],
            api_name="generate",
            js=CLOSE_MESSAGES,
            **models,
            **QUIET,
        )
        self.halt.click(None, None, None, cancels=[event], api_name=False)
        self.load_button.click(
            self.load,
            [self.other, self.chosen],
            [self.chosen, self.which, self.talker, self.prompt, self.other, self.note, *self.outs],
            api_name="load",
            js=CLOSE_MESSAGES,
            **models,
            **QUIET,
        )
        chat = (self.history, self.system, self.talker, *self.chat_settings)
        outs = [self.history, self.message, self.chat_note, self.chat_settings[4]]
        said = [
            trigger(self.chat, [self.message, *chat], outs, api_name=name, js=CLOSE_MESSAGES, **models, **QUIET)
            for trigger, name in ((self.send.click, "chat"), (self.message.submit, False))
        ]
        said.append(self.again.click(self.regenerate, list(chat), outs, api_name="regenerate", js=CLOSE_MESSAGES, **models, **QUIET))
        self.hush.click(None, None, None, cancels=said, api_name=False)
        self.clear.click(lambda name: ([], self.chat_notes(name)), [self.talker], [self.history, self.chat_note], cancels=said, api_name=False, queue=False)
        self.talker.change(self.chat_notes, [self.talker], [self.chat_note], api_name=False, queue=False)
        page.load(lambda: gr.Dropdown(choices=list(self.playground.models), value=self.chat_default()), None, [self.talker], api_name=False, queue=False)
        self.chosen.input(self.panes, [self.chosen], self.outs, api_name=False, show_progress="hidden")
        self.check.click(self.seen, [self.which, self.sample, self.last], [self.marked, self.verdict], api_name="seen", js=CLOSE_MESSAGES, **models, **QUIET)
        self.arena.wire(page, refuse, CLOSE_MESSAGES, **models, **QUIET)
        gr.on([page.load, timer.tick], self.runs, None, [self.curves, self.reports], api_name="runs", concurrency_limit=4, show_progress="hidden")

    def config(self, temperature, top_k, top_p, max_new, seed, stop) -> SamplingConfig:
        """A request's SamplingConfig from the values of a settings row, checked."""
        defaults = self.defaults
        top_p = number(top_p, "top-p", float, 1.0)
        return self.playground.settings(
            defaults,
            temperature=number(temperature, "temperature", float, defaults.temperature),
            top_k=number(top_k, "top-k", int) or None,  # 0 or empty: every token
            top_p=None if top_p == 1.0 else top_p,  # 1 or empty: off, as sample.py's None
            max_new_tokens=number(max_new, "max new tokens", int, defaults.max_new_tokens),
            seed=number(seed, "seed", int, defaults.seed),
            stop=(stop or "").replace("\\n", "\n"),
        )

    def write(self, text, models, *settings_and_last):
        """Generate: the columns as they grow, an update every STREAM_EVERY seconds."""
        playground, (*settings, last) = self.playground, settings_and_last
        try:
            cfg = self.config(*settings)
            refreshed = [playground.refresh(playground.models[n]) for n in models or [] if n in playground.models]
            stream = playground.generate(models or [], text or "", cfg)
            columns = next(stream)  # every check is made before this first round
        except UserError as e:
            raise refuse(e) from None
        notes = "\n\n".join(n for n in refreshed if n)
        yield self.updates(columns, notes, last, first=True)
        shown = time.perf_counter()
        for columns in stream:
            if time.perf_counter() - shown >= STREAM_EVERY:
                yield self.updates(columns, notes, None)
                shown = time.perf_counter()
        yield self.updates(columns, notes, last)

    @staticmethod
    def updates(columns: list[Column], notes: str, last: dict | None, first: bool = False) -> list:
        """The outputs for the columns so far: on the first round also each box's model name
        and visibility, after that only the texts; the samples are kept (`last`) at the start
        and the end, not at every update."""
        hidden = MAX_MODELS - len(columns)
        if first:
            boxes = [gr.Textbox(value=c.prompt + c.text, label=c.name, visible=True) for c in columns] + [gr.Textbox(value="", visible=False)] * hidden
        else:
            boxes = [c.prompt + c.text for c in columns] + [gr.skip()] * hidden
        if last is not None:
            last.update({c.name: c.text for c in columns})
        return [*boxes, "\n\n".join(c.stats() for c in columns), notes, gr.skip() if last is None else last]

    def panes(self, models) -> list:
        """The output panes for the models now chosen: named by them, emptied (what they showed was another choice's)."""
        names = [n for n in models or [] if n in self.playground.models][:MAX_MODELS]
        return [gr.Textbox(value="", **self.pane(names, i)) for i in range(MAX_MODELS)]

    def load(self, name, models):
        try:
            model = self.playground.load(name or "")
        except UserError as e:
            raise refuse(e) from None
        choices = list(self.playground.models)
        chosen = [*(models or []), model.name][-MAX_MODELS:]
        note = f"loaded {model.name} ({model.nbytes / 2**20:,.0f} MB of weights)"
        boxes = (
            gr.CheckboxGroup(choices=choices, value=chosen),
            gr.Dropdown(choices=choices),
            gr.Dropdown(choices=choices),
            gr.Textbox(label=self.playground.prompt_label()),
            "",
            note,
        )
        return *boxes, *self.panes(chosen)

    def chat(self, message, history, system, name, *settings):
        """Send: the user's message, then the model's answer growing after it."""
        try:
            cfg = self.config(*settings)
            if not (message or "").strip():
                raise UserError("the message is empty; type something for the model to answer")
        except UserError as e:
            raise refuse(e) from None
        yield from self.answer([*history, {"role": "user", "content": message}], system, name, cfg, gr.skip())

    def regenerate(self, history, system, name, *settings):
        """Regenerate: the last answer drawn again with the next seed (the seed box's + 1, shown there)."""
        try:
            cfg = self.config(*settings)
            while history and history[-1]["role"] == "assistant":
                history = history[:-1]
            if not history:
                raise UserError("there is no answer to regenerate yet; send a message first")
        except UserError as e:
            raise refuse(e) from None
        cfg = replace(cfg, seed=cfg.seed + 1)
        yield from self.answer(history, system, name, cfg, cfg.seed)

    def answer(self, history: list, system: str, name: str, cfg: SamplingConfig, seed):
        """The history with the model's answer growing at its end, an update every STREAM_EVERY seconds,
        the message box emptied and the seed box set (`seed`: a value or gr.skip())."""
        playground = self.playground
        try:
            refreshed = playground.refresh(chat_model(playground, name or ""))
            stream = reply(playground, name, conversation(system, history), cfg)
            answer = next(stream)  # every check is made before this
        except UserError as e:
            raise refuse(e) from None
        block_size = playground.models[name].block_size

        def update(answer: Reply, first: bool = False) -> tuple:
            notes = "\n\n".join(n for n in (refreshed, answer.notes(block_size)) if n)
            return [*history, {"role": "assistant", "content": answer.text}], "" if first else gr.skip(), notes, seed

        yield update(answer, first=True)
        shown = time.perf_counter()
        for answer in stream:
            if answer.done or time.perf_counter() - shown >= STREAM_EVERY:
                yield update(answer)
                shown = time.perf_counter()

    def seen(self, name, text, last):
        try:
            if not name:
                raise UserError("choose a model")
            pieces, line = self.playground.seen_in_training(name, text or last.get(name, ""))
        except UserError as e:
            raise refuse(e) from None
        return pieces, line.replace("\n", "  \n")

    def runs(self):
        return pd.DataFrame(self.playground.loss_rows(), columns=["iteration", "loss", "curve"]), self.playground.dataset_reports()


def text_of(content) -> str:
    """A chat message's text, as Gradio hands it back: a string, or a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts)


def conversation(system: str, history: list) -> list[dict]:
    """The messages for the model: the system message (when there is one), then the history's turns,
    leaving out an answer stopped before its first token (an empty answer is no turn)."""
    messages = [{"role": "system", "content": system}] if (system or "").strip() else []
    for m in history:
        text = text_of(m["content"])
        if m["role"] != "assistant" or text.strip():
            messages.append({"role": m["role"], "content": text})
    return messages


def build_page(playground: Playground, defaults: SamplingConfig, arena: Arena, notes: str = "") -> gr.Blocks:
    return Page(playground, defaults, arena).build(notes)
