"""OpenAI's GPT-2 weights as a model.py GPT, from the Hugging Face hub or a local copy.

    model = from_pretrained("gpt2")                                  # 124M, downloaded once, then cached
    model = from_pretrained("gpt2-medium", dropout=0.1, block_size=256)
    model = from_pretrained("./my-gpt2")                             # a directory in the Hugging Face layout

Only config.json and model.safetensors are fetched (huggingface_hub + safetensors: no pickle, no
transformers). Hugging Face's GPT2LMHeadModel uses GPT-2's names, as model.py does, up to a
`transformer.` prefix; its Conv1D layers store weights as (in, out), so those are transposed into
nn.Linear's (out, in). Files already in huggingface_hub's cache load with no network; else the hub
is asked once, with a short timeout, and an offline machine gets the error in seconds (at once
with HF_HUB_OFFLINE=1): download the two files elsewhere and pass the folder instead.
"""

import json
from pathlib import Path

import torch

from gptsuite.errors import UserError
from gptsuite.hub import first_line, unreachable
from model import GPT, GPTConfig

HUB_MODELS = {
    "gpt2": "openai-community/gpt2",  # 124M
    "gpt2-medium": "openai-community/gpt2-medium",  # 350M
    "gpt2-large": "openai-community/gpt2-large",  # 774M
    "gpt2-xl": "openai-community/gpt2-xl",  # 1558M
    "distilgpt2": "distilbert/distilgpt2",  # 82M, 6 layers
}
FILES = ("config.json", "model.safetensors")
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# config.json settings (with Hugging Face's defaults) that model.py's GPT hard-wires
ASSUMED = {
    "layer_norm_epsilon": (1e-5,),
    "n_inner": (None,),
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "tie_word_embeddings": (True,),
}


def is_pretrained(init_from: str) -> bool:
    """Whether init_from names GPT-2 weights: a hub name, or a directory to load them from."""
    return init_from in HUB_MODELS or Path(init_from).is_dir()


def fetch(init_from: str) -> tuple[Path, Path]:
    """Paths of config.json and model.safetensors: in the directory init_from, or downloaded
    from the hub (huggingface_hub caches them, so this is a lookup after the first time)."""
    if init_from not in HUB_MODELS:
        folder = Path(init_from)
        if not folder.is_dir():
            raise UserError(f"unknown init_from '{init_from}'; use one of {', '.join(HUB_MODELS)}, or a directory holding config.json and model.safetensors")
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise UserError(
                f"{folder} has no {' or '.join(missing)}; init_from needs a directory in the Hugging Face layout with config.json and model.safetensors"
            )
        return folder / FILES[0], folder / FILES[1]
    return _fetch_from_hub(init_from, HUB_MODELS[init_from])


def _fetch_from_hub(init_from: str, repo: str) -> tuple[Path, Path]:
    """The two files from huggingface_hub's cache if they are there (no network needed, nothing
    re-checked: GPT-2's weights do not change), else downloaded. Before a download, one HEAD
    request with a short timeout and no retries finds out whether the hub can be reached
    (hub.unreachable): huggingface_hub itself retries a failed request for half a minute when nothing is cached."""
    from huggingface_hub import constants, hf_hub_download, hf_hub_url, try_to_load_from_cache

    cached = [try_to_load_from_cache(repo, name) for name in FILES]
    if all(isinstance(path, str) for path in cached):
        return Path(cached[0]), Path(cached[1])

    def fail(reason: str) -> UserError:
        return UserError(
            f"could not get {init_from} from the Hugging Face hub ({reason}); with no network here, run `hf download {repo} {' '.join(FILES)} --local-dir {init_from}` on a connected machine, copy the folder over and pass --init_from=./{init_from}"
        )

    if constants.HF_HUB_OFFLINE:
        raise fail(f"HF_HUB_OFFLINE is set and {repo} is not in the cache {constants.HF_HUB_CACHE}")
    reason = unreachable(hf_hub_url(repo, FILES[0]))
    if reason:
        raise fail(reason)
    try:
        config_path, weights_path = (Path(hf_hub_download(repo, name)) for name in FILES)
    except Exception as e:  # the connection dropped, the disk filled up, ...
        raise fail(first_line(e)) from None
    return config_path, weights_path


HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu"}  # ours: config.json's activation_function (what export writes)
HF_ACTIVATIONS = {v: k for k, v in HF_ACTIVATION.items()} | {"gelu_pytorch_tanh": "gelu_tanh"}  # what a config.json may say: ours


def activation(name: str, source: str) -> str:
    if name not in HF_ACTIVATIONS:
        raise UserError(
            f"{source} sets activation_function={name!r}, but this GPT implements only {', '.join(map(repr, HF_ACTIVATIONS))}; use a standard GPT-2 checkpoint"
        )
    return HF_ACTIVATIONS[name]


def gpt_config(hf: dict, dropout: float, source: str) -> GPTConfig:
    """Our GPTConfig for a Hugging Face GPT-2 config.json; refuses variants model.py cannot run."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise UserError(f"{source} is a '{hf.get('model_type')}' model, not GPT-2; init_from loads GPT-2 checkpoints only")
    for key, ok in ASSUMED.items():
        if hf.get(key, ok[0]) not in ok:
            raise UserError(f"{source} sets {key}={hf[key]!r}, but this GPT implements only {ok[0]!r}; use a standard GPT-2 checkpoint")
    try:
        return GPTConfig(
            block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
            vocab_size=hf["vocab_size"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=hf["n_embd"],
            dropout=dropout,
            bias=True,
            activation=activation(hf.get("activation_function", "gelu_new"), source),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{source} is not a valid GPT-2 config.json ({type(e).__name__}: {e}); download it again") from None


def convert_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 weights -> ours. Files saved from GPT2LMHeadModel prefix keys with
    `transformer.`, the hub's original ones do not; both may carry causal-mask buffers."""
    out = {}
    for key, value in hf_state.items():
        key = key.removeprefix("transformer.")
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key == "lm_head.weight":
            continue  # mask buffers are rebuilt by SDPA; lm_head is tied to wte
        out[f"transformer.{key}"] = value.t() if key.endswith(CONV1D) else value
    if "transformer.wte.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]  # tied: the same tensor in our state dict
    return out


def load_weights(model: GPT, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = convert_state_dict(load_file(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}); download it again") from None
    ours = model.state_dict()
    missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    wrong = [k for k in set(ours) & set(state) if ours[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise UserError(
            f"{path} does not match its config.json ({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} misshapen tensors, e.g. {first}); download the model again"
        )
    model.load_state_dict(state)


def from_pretrained(init_from: str, dropout: float = 0.0, block_size: int | None = None) -> GPT:
    """A GPT holding GPT-2's weights (init_from: a name in HUB_MODELS or a directory), with the
    given dropout and, when block_size is smaller than GPT-2's 1024, cropped position embeddings."""
    config_path, weights_path = fetch(init_from)
    try:
        hf = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{config_path} is not valid JSON ({e}); download it again") from None
    config = gpt_config(hf, dropout, str(config_path))
    if block_size is not None and block_size > config.block_size:
        raise UserError(
            f"block_size={block_size} is longer than {init_from}'s context of {config.block_size} tokens; use --block_size={config.block_size} or less"
        )
    print(f"loading GPT-2 weights {init_from}: {config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, from {weights_path}")
    model = GPT(config)
    load_weights(model, weights_path)
    if block_size is not None and block_size < config.block_size:
        model.crop_block_size(block_size)
    return model
