"""The playground page as its users meet it: `python serve.py` in a subprocess, driven through
gradio_client (generate, stream, compare, stop, bad inputs, 8 clients at once, chat) and through a
real headless Chromium (selenium), which types a prompt, clicks Generate and waits for the text,
and holds a conversation in the Chat tab. The chat replies are checked against a plain greedy loop
and sample.py's seeded sampling, in-process."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_playground import bpe_model, char_data, char_model, page, sample_py

from conftest import ROOT

pytestmark = pytest.mark.slow
gradio_client = pytest.importorskip("gradio_client")
psutil = pytest.importorskip("psutil")

LIMIT = 400  # serve.py --max_new_tokens_limit


@pytest.fixture(scope="module")
def served(tmp_path_factory, request, chat_run):
    """serve.py with three small character models side by side; (url, process, models folder).
    Its arena draws prompts from a task file of the chat model's questions (loaded later, by
    chat_served) whose expected answers are mostly the chat model's greedy ones, so that a
    greedy answer is right and others mostly not."""
    from gptsuite.loading import load_model

    tmp = tmp_path_factory.mktemp("page")
    data = char_data(tmp)
    models = [str(char_model(tmp / name, data, seed)) for name, seed in (("scratch", 1), ("tuned", 2), ("other", 3))]
    char_model(tmp / "big", data, 4, n_embd=256)
    loaded, tasks = load_model("resume", str(chat_run)), []
    for i in (1, 2, 3, 5, 8):
        question = [{"role": "user", "content": f"{i}+{i}?"}]
        expected = str(2 * i) if i == 8 else greedy_answer(loaded, question, 8)
        tasks.append({"messages": [*question, {"role": "assistant", "content": expected}], "task": "add"})
    (tmp / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    args = [*models, "--port=0", "--device=cpu", f"--max_new_tokens_limit={LIMIT}", "--memory_limit=0.001", "--max_new_tokens=200"]
    args += ["--weights=fp32"]  # as sample.py's and the tests' own loads (the page's default on a CPU is bf16: test_weights checks that pair)
    args += [f"--arena_file={tmp / 'votes' / 'arena.jsonl'}", f"--arena_prompts={tmp / 'tasks.jsonl'}"]
    proc = subprocess.Popen([sys.executable, "serve.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, url = [], None
    deadline = time.time() + 120
    while url is None and time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if line.startswith("the playground is at "):
            url = line.split()[4]
    if url is None:
        proc.kill()
        pytest.fail("serve.py did not come up:\n" + "".join(lines))
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
    yield url, proc, tmp, models
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    """A tiny character model tuned on conversations (prepare.py chat, a few iterations of train.py):
    its checkpoint carries the chat template. A context of 256 holds a few turns."""
    import train
    from gptsuite.pipeline import prepare_documents
    from gptsuite.sources import load_dataset_module

    tmp = tmp_path_factory.mktemp("chat")
    system = [{"role": "system", "content": "test"}]
    records = [
        {"messages": system * (i % 4 == 0) + [{"role": "user", "content": f"{i}+{i}?"}, {"role": "assistant", "content": str(2 * i)}]} for i in range(40)
    ]
    (tmp / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    module = load_dataset_module("chat")
    prepare_documents(module.corpus(module.Config(input=str(tmp / "chat.jsonl"), tokenizer="char", block_size=256), tmp / "data"), tmp / "data")
    args = [
        "--max_iters=8",
        "--eval_interval=8",
        "--eval_iters=1",
        "--learning_rate=1e-2",
        "--warmup_iters=0",
        "--lr_decay_iters=8",
        "--gradient_accumulation_steps=1",
    ]
    shape = ["--device=cpu", "--compile=False", "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=256", "--batch_size=4"]
    train.main([f"--data_dir={tmp / 'data'}", f"--out_dir={tmp / 'run'}", *args, *shape])
    return tmp / "run"


@pytest.fixture(scope="module")
def chat_served(served, chat_run):
    """The chat model, loaded into the served page as its fourth model."""
    try:
        client(served[0]).predict(str(chat_run), [], api_name="/load")
    except gradio_client.exceptions.AppError as e:
        assert "is loaded already" in str(e)
    return str(chat_run)


def settings(models, prompt="First Citizen:", temperature=0.8, top_k=200, top_p=1.0, max_new=200, seed=1337, stop=""):
    return [prompt, models, temperature, top_k, top_p, max_new, seed, stop]


def client(url):
    return gradio_client.Client(url, verbose=False)


def test_generate_streams_what_sample_py_writes(served, capsys):
    url, proc, tmp, models = served
    job = client(url).submit(*settings(models[:1], max_new=LIMIT, seed=3), api_name="/generate")
    updates = [out[0]["value"] if isinstance(out[0], dict) else out[0] for out in job]  # the first names the box: an update
    final = job.outputs()[-1]
    text = final[0]
    assert len(updates) > 2 and all(text.startswith(u) for u in updates)  # it grew in front of the reader
    assert text == sample_py(
        capsys, Path(models[0]), "First Citizen:", f"--max_new_tokens={LIMIT}", "--seed=3"
    )  # the prompt and the sample, as sample.py prints them
    assert f"{LIMIT} tokens" in final[4] and "(done)" in final[4]


def test_three_models_side_by_side(served, capsys):
    url, proc, tmp, models = served
    final = client(url).predict(*settings(models, max_new=60, seed=5), api_name="/generate")
    for out, text in zip(models, final[:3], strict=True):
        assert text == sample_py(capsys, Path(out), "First Citizen:", "--max_new_tokens=60", "--seed=5")
    assert len(set(final[:3])) == 3 and final[4].count("(done)") == 3


def test_bad_inputs_are_messages_and_the_server_goes_on(served, request):
    url, proc, tmp, models = served
    c = client(url)
    cases = [
        (settings(models[:1], prompt=""), "the prompt is empty"),
        (settings(models[:1], prompt="First Citizen: " * 5), "the prompt is 75 tokens, but .* reads at most 64"),
        (settings(models[:1], top_p=1.5), r"top_p must be in \(0, 1\]"),
        (settings(models[:1], max_new=LIMIT + 1), f"greater than maximum value {LIMIT}"),  # the slider's own bound
        (settings([]), "choose at least one model"),
    ]
    for args, message in cases:
        with pytest.raises(gradio_client.exceptions.AppError, match=message):
            c.predict(*args, api_name="/generate")
    with pytest.raises(gradio_client.exceptions.AppError, match=r"needs 0.00 GB for its weights.*--memory_limit"):
        c.predict(str(tmp / "big"), models, api_name="/load")
    request.getfixturevalue("chat_served")  # the fourth model
    ckpt, aside = Path(models[0]) / "ckpt.pt", tmp / "aside.pt"
    ckpt.rename(aside)  # gone from disk for a moment (a rename back keeps its stamp: not a newer checkpoint)
    try:
        final = c.predict(*settings(models[:1], max_new=10), api_name="/generate")
    finally:
        aside.rename(ckpt)
    assert "no longer on disk" in final[5] and "10 tokens" in final[4]
    with pytest.raises(gradio_client.exceptions.AppError, match="holds 4 models already"):
        c.predict(str(tmp / "big"), models, api_name="/load")
    assert proc.poll() is None


def test_stop_ends_a_generation_and_the_next_one_runs(served):
    url, proc, tmp, models = served
    c = client(url)
    job = c.submit(*settings(models, max_new=LIMIT, temperature=1.0), api_name="/generate")
    while not job.outputs():
        time.sleep(0.01)
    job.cancel()
    final = c.predict(*settings(models[:1], max_new=20), api_name="/generate")
    assert "20 tokens" in final[4]


def test_runs_view_and_seen_in_training(served):
    url, proc, tmp, models = served
    c = client(url)
    c.predict(*settings(models[:1], max_new=50), api_name="/generate")
    pieces, line = c.predict(models[0], "First Citizen:\nBefore we proceed any further", api_name="/seen")
    assert [p["class_or_confidence"] for p in pieces] == ["longest"] and "longest span also in train.bin: 44 tokens" in line
    plot, reports = c.predict(api_name="/runs")
    runs = reports.split(f" were trained on {tmp / 'data'}")[0]  # with any a test before loaded
    assert runs.startswith(f"**{models[0]}**, **{models[1]}**, **{models[2]}**"), reports


def test_eight_clients_at_once_all_finish_in_bounded_memory(served):
    url, proc, tmp, models = served
    server = psutil.Process(proc.pid)
    client(url).predict(*settings(models[:1], max_new=100), api_name="/generate")  # warm
    before = server.memory_info().rss
    latencies, finals, peak = [], [], [before]

    def one(i):
        start = time.perf_counter()
        final = client(url).predict(*settings(models[:1], max_new=100, seed=i), api_name="/generate")
        latencies.append(time.perf_counter() - start)
        finals.append(final)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak.append(server.memory_info().rss)
        time.sleep(0.05)
    assert len(finals) == 8 and all("100 tokens" in f[4] and "(done)" in f[4] for f in finals)
    growth = (max(peak) - before) / 2**20
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[-1]
    print(f"8 clients: p50 {p50:.2f} s, p95 {p95:.2f} s; server RSS {before / 2**20:.0f} MB, peak {max(peak) / 2**20:.0f} MB")
    assert growth < 100, f"the server grew by {growth:.0f} MB serving 8 clients"


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's browser tests (a start costs seconds)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1200", "--disable-background-networking"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@needs_chromium
def test_in_a_real_browser(served, browser, tmp_path):
    """Chromium loads the page, an empty prompt and a bad model name show their messages, then a
    prompt is typed and Generate clicked: the panes, named by their models from the start, fill with
    the prompt and the samples; the messages go with the next request and no box keeps an "Error"
    badge; labels do not overlap their boxes and the Runs tab shows its legend. Screenshots before
    and after the error and after the generation are saved (PAGE_SCREENSHOT_DIR)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, proc, tmp, models = served
    driver = browser
    for i, out in enumerate(models):  # loss curves for the Runs tab
        (Path(out) / "metrics.jsonl").write_text("".join(f'{{"iter": {j}, "loss": {4 - j / 100 - i / 10}}}\n' for j in range(0, 100, 10)))
    shots = Path(os.environ.get("PAGE_SCREENSHOT_DIR", tmp_path))
    shot = shots / "playground.png"
    badges = "//*[normalize-space(text())='Error'][not(ancestor::*[contains(@class, 'toast')])]"  # a component's error status, not the message
    overlaps = """return [...document.querySelectorAll('input[type=range]')].map((range) => {
        const block = range.closest('.block'), label = block.querySelector('[data-testid=block-info]').getBoundingClientRect();
        const box = block.querySelector('input[type=number]').getBoundingClientRect();
        return label.right > box.left && label.left < box.right && label.bottom > box.top && label.top < box.bottom; });"""
    wait = WebDriverWait(driver, 60)
    driver.get(url)
    prompt = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea"))
    errors = lambda d: [e.get_attribute("textContent") for e in d.find_elements(By.CSS_SELECTOR, ".toast-body.error")]  # noqa: E731
    shown_badges = lambda d: [e for e in d.find_elements(By.XPATH, badges) if e.is_displayed()]  # noqa: E731
    labels = [driver.find_element(By.ID, f"out{i}").find_element(By.CSS_SELECTOR, "[data-testid=block-info]").text for i in range(3)]
    assert labels == models, labels  # named by their models before the first generation
    assert not any(driver.execute_script(overlaps)), "a slider's label overlaps its number box"
    driver.save_screenshot(str(shots / "playground-before-error.png"))
    driver.find_element(By.ID, "generate").click()  # an empty prompt first: its message must show
    shown = wait.until(errors)
    assert any("the prompt is empty" in e for e in shown), shown
    driver.find_element(By.CSS_SELECTOR, "#other textarea").send_keys(str(tmp / "nowhere"))
    driver.find_element(By.ID, "load").click()
    wait.until(lambda d: any("no model" in e for e in errors(d)))
    driver.save_screenshot(str(shots / "playground-error.png"))
    assert not shown_badges(driver), [b.get_attribute("outerHTML")[:200] for b in shown_badges(driver)]
    prompt.send_keys("First Citizen:")
    driver.find_element(By.ID, "generate").click()  # the messages are not closed by hand: the next request takes them away
    boxes = [f"#out{i} textarea" for i in range(3)]
    wait.until(lambda d: all(d.find_element(By.CSS_SELECTOR, b).get_attribute("value") for b in boxes))
    wait.until(lambda d: d.find_element(By.ID, "stats").text.count("(done)") == 3)
    texts = [driver.find_element(By.CSS_SELECTOR, b).get_attribute("value") for b in boxes]
    driver.save_screenshot(str(shot))
    assert not errors(driver), errors(driver)
    assert not shown_badges(driver)
    assert len(set(texts)) == 3 and all(t.startswith("First Citizen:") and len(t) > 50 for t in texts)  # the prompt, then the sample
    assert not any(e.is_displayed() for e in driver.find_elements(By.ID, "out3"))  # three models: three columns
    next(t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Runs").click()
    legend = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#curves .role-legend"))[0]
    plot = driver.find_element(By.ID, "curves")
    wait.until(lambda d: legend.rect["height"] > 0)
    driver.save_screenshot(str(shots / "playground-runs.png"))
    assert legend.rect["y"] + legend.rect["height"] <= plot.rect["y"] + plot.rect["height"], (legend.rect, plot.rect)  # the legend is inside its box
    assert shot.stat().st_size > 10_000


def test_bench_serve_times_both_sides_and_the_clients(served):
    """tools.bench_serve on a small model: both sides timed, every client answered."""
    from conftest import run_entry

    url, proc, tmp, models = served
    out = run_entry("-m", "tools.bench_serve", f"--out_dir={models[0]}", "--start=First Citizen:", "--max_new_tokens=16", "--repeats=1", "--clients=2").stdout
    assert "| sample.py --stream |" in out and "| the page (gradio_client) |" in out and "| page / sample.py |" in out
    assert "2 clients at once: 2/2 complete answers" in out and "server memory (RSS)" in out


# --- chat ----------------------------------------------------------------------------------------


def greedy_answer(loaded, messages: list[dict], max_new_tokens: int) -> str:
    """The model's answer at temperature 0, as a plain loop: forward, argmax, until the end of turn."""
    from gptsuite import tokenizer as tokenizers
    from gptsuite.chat import CHAT_TEMPLATE, prompt_ids

    tok, template = tokenizers.from_meta(loaded.tokenizer), loaded.chat_template or CHAT_TEMPLATE
    ids, out = prompt_ids(tok, template, messages), []
    with torch.no_grad():
        while len(out) < max_new_tokens:
            logits, _ = loaded.model(torch.tensor([ids + out]))
            t = int(logits[0, -1, : tok.vocab_size].argmax())
            if t == 50256:
                break
            out.append(t)
            if tok.eot_token is None and template["end"] in tok.decode(out):  # at character level the marker is spelled out
                break
    return tok.decode(out).split(template["end"])[0]


def final_reply(pg, name: str, messages: list[dict], **values):
    from gptsuite.generate import SamplingConfig
    from gptsuite.playground_chat import reply

    *_, answer = reply(pg, name, messages, pg.settings(SamplingConfig(), **values))
    return answer


def exchange(*turns: str) -> list[dict]:
    return [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns)]


def test_chat_answers_as_a_greedy_loop(chat_run, tmp_path):
    """At temperature 0 the reply to a conversation is the plain greedy loop's, for a model tuned on
    conversations (its template, an end marker spelled in characters) and for GPT-2 BPE without a
    template (chat.CHAT_TEMPLATE, said; the <|endoftext|> token ends the turn)."""
    pg = page(max_new_tokens=200)
    tuned, plain = pg.load(str(chat_run)), pg.load(str(bpe_model(tmp_path / "bpe", None)))
    messages = [{"role": "system", "content": "test"}, *exchange("3+3?", "6", "4+4?")]
    answer = final_reply(pg, tuned.name, messages, temperature=0.0, max_new_tokens=40)
    assert answer.done and answer.tuned and answer.dropped == 0 and answer.seed == 1337
    assert answer.text == greedy_answer(tuned.loaded, messages, 40), answer
    assert "not tuned" not in answer.notes(tuned.block_size)
    messages = exchange("Hi there", "Hello.", "How are you?")
    answer = final_reply(pg, plain.name, messages, temperature=0.0, max_new_tokens=20)
    assert answer.text == greedy_answer(plain.loaded, messages, 20) and answer.tokens == 20 and answer.dropped == 0
    assert "was not tuned on conversations" in answer.notes(plain.block_size)
    from gptsuite.errors import UserError

    for name, bad, message in [
        (tuned.name, exchange("3+3?", "6", " "), "the message is empty"),
        ("nowhere", exchange("3+3?"), "nowhere is not loaded"),
        (tuned.name, exchange("3+3?<|endoftext|>"), "contains the end-of-turn marker"),
    ]:
        with pytest.raises(UserError, match=message):
            final_reply(pg, name, bad, max_new_tokens=20)


def test_a_reply_ends_at_the_end_of_turn_marker(chat_run, tmp_path, monkeypatch):
    """Whatever the model writes after the end-of-turn marker is not part of its answer: the
    marker spelled in characters (a character-level model) or the <|endoftext|> token (GPT-2 BPE).
    The models here are scripted, so that they write the marker where the test says."""
    pg = page(max_new_tokens=200)
    tuned, plain = pg.load(str(chat_run)), pg.load(str(bpe_model(tmp_path / "bpe", None)))
    for model, script, said in [(tuned, "12<|endoftext|>34", "12"), (plain, None, "Hi there")]:
        ids = model.tok.encode(script) if script else [*model.tok.encode("Hi there"), 50256, *model.tok.encode(" and more")]

        def scripted(x, max_new_tokens, *args, ids=ids):
            for t in ids[:max_new_tokens]:
                yield torch.tensor([[t]])

        monkeypatch.setattr(model.loaded.model, "generate_stream", scripted)
        answer = final_reply(pg, model.name, exchange("3+3?"), temperature=0.0, max_new_tokens=40)
        assert answer.done and answer.text == said, answer


def test_old_turns_drop_to_fit_the_context_and_the_page_says_so(chat_run):
    """A conversation longer than the context: the oldest turns are left out (the system message
    stays) until the prompt and the room to answer fit, the reply is the greedy one for what is
    left, and the notes say how many were dropped."""
    from gptsuite.chat import prompt_ids

    pg = page(max_new_tokens=200)
    model = pg.load(str(chat_run))
    system = [{"role": "system", "content": "test"}]
    turns = exchange(*[t for i in range(1, 6) for t in (f"{i}+{i}?", str(2 * i))], "9+9?")
    room = 100  # max_new_tokens, under half the context of 256
    exchanges = range(0, len(turns), 2)  # whole exchanges drop: what is kept starts with a user message
    fits = [d for d in exchanges if len(prompt_ids(model.tok, model.loaded.chat_template, system + turns[d:])) + room <= model.block_size]
    assert fits[0] > 0
    answer = final_reply(pg, model.name, system + turns, temperature=0.0, max_new_tokens=room)
    assert answer.dropped == fits[0]
    assert answer.text == greedy_answer(model.loaded, system + turns[fits[0] :], room)
    assert f"the {fits[0]} oldest messages did not fit in its context of 256 tokens" in answer.notes(model.block_size)


def seeded_answer(chat_run: Path, messages: list[dict], seed: int, **values) -> str:
    """The sample of that seed as sample.py draws it: the generator seeded, then generate_texts."""
    from gptsuite import tokenizer as tokenizers
    from gptsuite.chat import prompt_ids
    from gptsuite.generate import SamplingConfig, chat_settings, generate_texts
    from gptsuite.loading import load_model

    loaded = load_model("resume", str(chat_run))
    tok = tokenizers.from_meta(loaded.tokenizer)
    cfg = chat_settings(SamplingConfig(seed=seed, **values), tok, loaded.chat_template)
    torch.manual_seed(seed)
    with torch.no_grad():
        row = generate_texts(loaded.model, tok, prompt_ids(tok, loaded.chat_template, messages), 1, cfg, "cpu")[0]
    return tok.decode(row).split(cfg.stop)[0]


def texts(history: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], "".join(p["text"] for p in m["content"])) for m in history]


def test_chat_on_the_page_regenerates_with_the_next_seed(served, chat_served, chat_run):
    """Send, then Regenerate through the page's API: the answer is the seeded sample of the seed in
    the box, then replaced by that of the next seed, which the seed box shows; bad requests are
    messages and the server goes on."""
    url, proc, tmp, models = served
    c = client(url)
    knobs = [1.5, 0, 1.0, 60, 41, ""]  # temperature, top-k (every token), top-p, max new tokens, seed, stop
    history, box, notes, seed = c.predict("3+3?", [], "", chat_served, *knobs, api_name="/chat")
    first = seeded_answer(chat_run, exchange("3+3?"), 41, temperature=1.5, top_k=None, max_new_tokens=60)
    assert texts(history) == [("user", "3+3?"), ("assistant", first)] and "answered with seed 41" in notes
    history, box, notes, seed = c.predict(history, "", chat_served, *knobs, api_name="/regenerate")
    second = seeded_answer(chat_run, exchange("3+3?"), 42, temperature=1.5, top_k=None, max_new_tokens=60)
    assert texts(history) == [("user", "3+3?"), ("assistant", second)] and seed == 42 and "answered with seed 42" in notes
    assert first != second
    for args, endpoint, message in [
        (("  ", [], "", chat_served, *knobs), "/chat", "the message is empty"),
        (([], "", chat_served, *knobs), "/regenerate", "no answer to regenerate"),
        (("3+3?", [], "", models[0], *knobs), "/chat", r"was not tuned on conversations, and its vocabulary lacks '<'"),  # Shakespeare has no '<'
        (("3+3?", [], "", str(tmp / "nowhere"), *knobs), "/chat", "nowhere is not loaded; load it"),
    ]:
        with pytest.raises(gradio_client.exceptions.AppError, match=message):
            c.predict(*args, api_name=endpoint)
    assert proc.poll() is None


@needs_chromium
def test_a_conversation_in_a_real_browser(served, chat_served, browser, tmp_path):
    """In the Chat tab (the browser of the test before, when it ran): a message typed and sent, the
    reply in the history, a second message and its reply; both are the Playground's replies to that
    conversation with the page's settings and seed. A screenshot is saved (PAGE_SCREENSHOT_DIR)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url = served[0]
    driver, wait = browser, WebDriverWait(browser, 60)
    driver.get(url)  # afresh: the Chat tab lists the models loaded now
    wait.until(lambda d: any(t.text == "Chat" for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")))
    next(t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Chat").click()
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#message textarea"))
    assert driver.find_element(By.CSS_SELECTOR, "#chat-model input").get_attribute("value") == chat_served  # the model tuned on conversations

    def said(who: str) -> list[str]:
        return [e.get_attribute("textContent").strip() for e in driver.find_elements(By.CSS_SELECTOR, f"#history [data-testid={who}]")]

    # short answers, so that the second message is asked with the whole first exchange in the context
    driver.find_element(By.CSS_SELECTOR, "#chat-settings button").click()
    limit = wait.until(
        lambda d: d.find_element(
            By.XPATH, "//*[@id='chat-settings']//*[normalize-space(text())='max new tokens']/ancestor::div[contains(@class, 'block')][1]//input[@type='number']"
        )
    )
    limit.send_keys(Keys.CONTROL, "a")
    limit.send_keys("16", Keys.TAB)
    pg = page(max_new_tokens=LIMIT)
    pg.load(chat_served)
    messages = []
    for n, message in enumerate(["3+3?", "12+12?"], 1):
        box.send_keys(message)
        driver.find_element(By.ID, "send").click()
        wait.until(lambda d: len(said("bot")) == n and "answered with seed 1337" in d.find_element(By.ID, "chat-note").text)  # noqa: B023
        messages.append({"role": "user", "content": message})
        expected = final_reply(pg, chat_served, messages, max_new_tokens=16).text  # the page's settings
        assert len(messages) == 2 * n - 1 and final_reply(pg, chat_served, messages, max_new_tokens=16).dropped == 0  # the whole conversation is asked
        assert said("user") == [m["content"] for m in messages if m["role"] == "user"]
        assert said("bot")[-1].split() == expected.split()  # as shown: line breaks as breaks
        if expected.strip():  # an empty answer is no turn (the page leaves it out too)
            messages.append({"role": "assistant", "content": expected})
    driver.save_screenshot(str(Path(os.environ.get("PAGE_SCREENSHOT_DIR", tmp_path)) / "playground-chat.png"))


# --- arena ---------------------------------------------------------------------------------------


def arena_round(c, **values):
    ask = dict(prompt="", system="", seed=None, max_new_tokens=16)
    return c.predict(**{**ask, **values}, api_name="/arena_round")


def new_votes(served, before: int = 0) -> list[dict]:
    from gptsuite.arena import read_votes

    path = served[2] / "votes" / "arena.jsonl"
    return read_votes(path).records[before:] if path.exists() else []


def test_an_arena_round_and_its_vote_through_the_api(served, chat_served, chat_run):
    """A round drawn from the prompts file between the chat model at two temperatures: the answers
    are the seeded samples of sample.py's loop for the recorded settings, shown in the recorded
    order; the vote is one line of the votes file, the names revealed after it; bad votes are
    messages and the server goes on."""
    url, proc, tmp, models = served
    c, before = client(url), len(new_votes(served))
    shown, reference, a, b, round_id, note = arena_round(c, first=chat_served, second=chat_served, temperature=0.5, second_temperature="1.5")
    tasks = [json.loads(line)["messages"] for line in (tmp / "tasks.jsonl").read_text().splitlines()]
    assert reference == {q["content"]: a["content"] for q, a in tasks}[shown] and round_id in note
    assert chat_served not in note  # hidden until the vote
    reveal, board = c.predict(round_id, "b", api_name="/arena_vote")
    (record,) = new_votes(served, before)
    assert list(record)[:4] == ["time", "round", "round_seed", "swapped"] and record["round"] == round_id and record["winner"] == "b"
    assert record["chat"] and record["prompt"] == [{"role": "user", "content": shown}] and record["reference"] == reference and record["task"] == "add"
    temperatures = [record[s]["settings"]["temperature"] for s in "ab"]
    assert temperatures == ([1.5, 0.5] if record["swapped"] else [0.5, 1.5]) and (record["a"]["answer"], record["b"]["answer"]) == (a, b)
    for side in "ab":
        settings = record[side]["settings"]
        expected = seeded_answer(chat_run, record["prompt"], settings["seed"], temperature=settings["temperature"], top_k=settings["top_k"], max_new_tokens=16)
        assert record[side]["answer"] == expected and record[side]["model"] == chat_served
    assert f"A was **{chat_served}** (temperature {temperatures[0]}" in reveal and "votes in" in board and "temperature=0.5" in board
    for args, message in [
        ((round_id, "a"), "has its vote already"),
        (("nowhere", "a"), "no round 'nowhere' on this page"),
        ((round_id, "maybe"), "a vote is one of a, b, tie, both_bad"),
    ]:
        with pytest.raises(gradio_client.exceptions.AppError, match=message):
            c.predict(*args, api_name="/arena_vote")
    with pytest.raises(gradio_client.exceptions.AppError, match="both sides are .* at the same settings"):
        arena_round(c, first=chat_served, second=chat_served, seed=3)
    assert len(new_votes(served, before)) == 1 and proc.poll() is None


def test_the_scripted_voter_votes_by_the_reference(served, chat_served, capsys):
    """tools.arena_voter through the page: every vote is the rule's for the recorded answers and
    reference (right beats wrong; both right a tie; both wrong both bad)."""
    from tools.arena_voter import main

    url, proc, tmp, models = served
    before = len(new_votes(served))
    main([f"--url={url}", "--rounds=6", f"--first={chat_served}", f"--second={chat_served}", "--second_temperature=2.0", "--max_new_tokens=8"])
    records = new_votes(served, before)
    assert len(records) == 6 and any(r["winner"] in ("a", "b") for r in records)  # greedy answers are mostly right, hot ones not
    for r in records:
        right = [r[s]["answer"].strip() == r["reference"].strip() for s in "ab"]
        assert r["winner"] == {(True, True): "tie", (True, False): "a", (False, True): "b", (False, False): "both_bad"}[tuple(right)], r
    out = capsys.readouterr().out
    assert "6 votes:" in out and "| pair |" in out


@needs_chromium
def test_an_arena_round_in_a_real_browser(served, browser, tmp_path):
    """In the Arena tab: a prompt typed, New round, two answers named A and B only; a vote names
    the models and the leaderboard counts it. A screenshot is saved (PAGE_SCREENSHOT_DIR)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, proc, tmp, models = served
    driver, wait = browser, WebDriverWait(browser, 60)
    driver.get(url)
    wait.until(lambda d: any(t.text == "Arena" for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")))
    next(t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Arena").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#arena-prompt textarea")).send_keys("First Citizen:")
    before = len(new_votes(served))
    driver.find_element(By.ID, "arena-round").click()
    answers = ["#arena-answer-a textarea", "#arena-answer-b textarea"]
    wait.until(lambda d: all(d.find_element(By.CSS_SELECTOR, a).get_attribute("value") for a in answers))
    assert not any(m in driver.find_element(By.ID, "arena-note").text for m in models)  # hidden until the vote
    driver.find_element(By.ID, "arena-a").click()
    wait.until(lambda d: "A was" in d.find_element(By.ID, "arena-note").text)
    wait.until(lambda d: "votes in" in d.find_element(By.ID, "arena-board").text)
    driver.save_screenshot(str(Path(os.environ.get("PAGE_SCREENSHOT_DIR", tmp_path)) / "playground-arena.png"))
    (record,) = new_votes(served, before)
    assert record["winner"] == "a" and record["prompt"] == "First Citizen:" and {record["a"]["model"], record["b"]["model"]} == set(models[:2])
    assert record["a"]["settings"] == {**record["b"]["settings"], "seed": record["a"]["settings"]["seed"]} and record["a"]["settings"]["temperature"] == 0.8
    assert record["a"]["settings"]["seed"] == record["b"]["settings"]["seed"]  # empty boxes: the other's settings are the same
    assert f"A was {record['a']['model']} (temperature 0.8" in driver.find_element(By.ID, "arena-note").text
