"""The Arena tab of the playground page: its components and events (gptsuite/playground_arena.py
does the work). Two named API endpoints, for a scripted voter (tools/arena_voter.py) as for the page:

    arena_round(prompt, system, first, second, temperature, top_k, top_p, max_new_tokens, seed, stop,
                second_temperature, second_seed) -> (prompt shown, reference, answer A, answer B, round id, note)
    arena_vote(round, winner) -> (the names revealed, the leaderboard)     # winner: a, b, tie or both_bad

An empty prompt draws one from serve.py's --arena_prompts; an empty seed draws one for the round;
an empty second temperature or seed is the first's.
"""

import gradio as gr

from gptsuite.errors import UserError
from gptsuite.playground_arena import Arena

VOTES = {"arena-a": ("A is better", "a"), "arena-b": ("B is better", "b"), "arena-tie": ("Tie", "tie"), "arena-bad": ("Both are bad", "both_bad")}


class ArenaTab:
    def __init__(self, page, arena: Arena):
        self.page, self.arena = page, arena  # page: the gptsuite.page.Page it is a tab of

    def build(self) -> None:
        names = list(self.arena.playground.models)
        drawn = f" (empty: one drawn from {len(self.arena.prompts)} in --arena_prompts)" if self.arena.prompts else ""
        gr.Markdown(f"Two answers to one prompt, A and B in a random order, the models hidden until you vote. Every vote goes to `{self.arena.file}`.")
        with gr.Row():
            self.prompt = gr.Textbox("", label=f"prompt{drawn}", lines=3, scale=3, elem_id="arena-prompt")
            self.system = gr.Textbox("", label="system message (optional; models tuned on conversations)", lines=3, scale=2, elem_id="arena-system")
        with gr.Row():
            self.first = gr.Dropdown(names, value=names[0] if names else None, label="one model", allow_custom_value=True, elem_id="arena-first")
            second = names[1] if len(names) > 1 else names[0] if names else None
            self.second = gr.Dropdown(
                names, value=second, label="the other (or the same at another temperature or seed)", allow_custom_value=True, elem_id="arena-second"
            )
            # text boxes: a number box sends 0 when left empty, and empty means "the same" here
            self.second_temperature = gr.Textbox("", label="the other's temperature (empty: the same)", elem_id="arena-temperature2")
            self.second_seed = gr.Textbox("", label="the other's seed (empty: the same)", elem_id="arena-seed2")
        with gr.Accordion("sampling settings", open=False, elem_id="arena-settings"):
            self.settings = self.page.settings_row(seed=None, seed_label="seed (empty: a new one each round)")
        self.start = gr.Button("New round", variant="primary", elem_id="arena-round")
        self.shown = gr.Textbox(label="the prompt", interactive=False, lines=2, elem_id="arena-shown")
        self.reference = gr.Textbox(label="reference answer (from the prompts file)", interactive=False, elem_id="arena-reference")
        with gr.Row(equal_height=True):
            self.a = gr.Textbox(label="A", interactive=False, lines=8, elem_id="arena-answer-a")
            self.b = gr.Textbox(label="B", interactive=False, lines=8, elem_id="arena-answer-b")
        with gr.Row():
            self.buttons = {key: gr.Button(label, elem_id=key) for key, (label, _) in VOTES.items()}
        self.round = gr.Textbox(label="round", interactive=False, elem_id="arena-round-id")
        self.note = gr.Markdown(elem_id="arena-note")
        self.board = gr.Markdown(elem_id="arena-board")

    def wire(self, page: gr.Blocks, refuse, js: str, **queue) -> None:
        """The events; `refuse` makes a UserError the page's message, `js` runs before a request,
        `queue`: the page's settings of the requests that use the models."""
        self.refuse = refuse
        inputs = [self.prompt, self.system, self.first, self.second, *self.settings, self.second_temperature, self.second_seed]
        outputs = [self.shown, self.reference, self.a, self.b, self.round, self.note]
        self.start.click(self.new_round, inputs, outputs, api_name="arena_round", js=js, **queue)
        for key, (_, winner) in VOTES.items():
            self.buttons[key].click(
                lambda rnd, winner=winner: self.vote(rnd, winner), [self.round], [self.note, self.board], api_name=False, js=js, show_progress="hidden"
            )
        gr.api(self.api_vote, api_name="arena_vote")
        choices = lambda: [gr.Dropdown(choices=list(self.arena.playground.models))] * 2  # noqa: E731  (models loaded since the page was built)
        page.load(choices, None, [self.first, self.second], api_name=False, queue=False)
        page.load(self.arena.board, None, [self.board], api_name=False)

    def new_round(self, prompt, system, first, second, temperature, top_k, top_p, max_new_tokens, seed, stop, second_temperature, second_seed):
        settings, temperature2, seed2 = [temperature, top_k, top_p, max_new_tokens, seed, stop], second_temperature, second_seed
        given = lambda value: value not in (None, "")  # noqa: E731
        try:
            cfg = self.page.config(*settings)  # an empty seed: the page's, replaced by the round's below
            other = self.page.config(temperature2 if given(temperature2) else settings[0], *settings[1:4], seed2 if given(seed2) else settings[4], settings[5])
            second_values = {"temperature": other.temperature} | ({"seed": other.seed} if given(seed2) else {})
            seed = cfg.seed if given(settings[4]) else None
            rnd = self.arena.new_round(prompt or "", system or "", first or "", second or "", cfg, seed, second_values)
        except UserError as e:
            raise self.refuse(e) from None
        note = f"round {rnd.id}: vote below; the models are named after the vote"
        note += "".join(f"\n\nnote: {n}" for n in rnd.notes)
        return rnd.shown(), rnd.prompt.reference or "", rnd.sides[0].answer, rnd.sides[1].answer, rnd.id, note

    def vote(self, round_id: str, winner: str) -> tuple[str, str]:
        try:
            rnd = self.arena.vote(round_id, winner)
        except UserError as e:
            raise self.refuse(e) from None
        return rnd.reveal(), self.arena.board()

    def api_vote(self, round: str, winner: str) -> tuple[str, str]:
        """The vote of a round: a, b, tie or both_bad; returns the names revealed and the leaderboard."""
        return self.vote(round, winner)
