"""Generation speed of the demo model on this machine: cached engine vs full recomputation vs
transformers, time to first token, bf16 vs float32 cache. One run, one table.

  python bench/decode.py                                   # everything (~5-10 min on 2 cores)
  python bench/decode.py --new_tokens 128 --repeats 2 --uncached_tokens 64 --skip_hf   # quick

Rows (greedy, stop ids off so every row generates exactly --new_tokens; float32 parameters):
  cached         slm_jax.inference.Engine: prefill each prompt, insert into its slot, jit scan of
                 decode steps over the KV cache (end to end: prefills + decode loop)
  uncached       the same model recomputing the whole sequence at every step (no cache): one
                 forward per new token over the sequence so far, padded to a multiple of
                 --uncached_bucket (each padded length compiled before timing), batched over rows
  transformers   LlamaForCausalLM.generate (its KV cache; sdpa; the faster of --torch_threads,
                 probed per batch size) on the same weights, exported
                 through slm_jax.export.hf_export (text rows only: its vocabulary is the
                 4096 text ids, ours the padded unified vocabulary, so ours computes ~15% more
                 head logits per token)
  TTFT           prefill of a --ttft_prompt-token prompt to the first sampled token
  bf16 cache     Engine(cache_dtype="bfloat16"): the KV cache in bfloat16, compute in float32

Times are the best of --repeats (--hf_repeats for transformers; the uncached run once), with
compilation excluded: everything runs once before it is timed.
The model is configs/models/demo_14m.gin (or --gin_file / --gin_param).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # must precede the first jax import

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from slm_jax import configuration  # noqa: E402
from slm_jax.inference import sampling  # noqa: E402
from slm_jax.inference.engine import Engine  # noqa: E402
from slm_jax.models import build as build_lib  # noqa: E402


# -- machine ----------------------------------------------------------------------------------
def machine_info() -> str:
  cpu = platform.processor() or "?"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return (f"machine: {cpu}, {os.cpu_count()} cores; python {platform.python_version()}, "
          f"jax {jax.__version__} ({jax.default_backend()}); "
          f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')}")


def load() -> str:
  return "load(1m, 5m) %.2f, %.2f" % os.getloadavg()[:2]


def best_of(fn, repeats: int):
  """(best wall seconds, last result) of `fn()` over `repeats` calls (fn must block)."""
  best, out = float("inf"), None
  for _ in range(repeats):
    t = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - t)
  return best, out


def text_prompts(cfg, batch: int, length: int, seed: int = 0) -> np.ndarray:
  """int32[batch, length] unified text ids (no specials: transformers sees the same text)."""
  v = cfg.vocab
  return np.random.default_rng(seed).integers(v.text_start, v.text_start + v.text_size,
                                              (batch, length)).astype(np.int32)


# -- slm_jax: cached ----------------------------------------------------------------------------
def engine_run(engine: Engine, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
  """Greedy continuation of every prompt (one per slot), end to end; int32[B, new_tokens]."""
  state = engine.init_decode_state()
  first = []
  for slot, p in enumerate(prompts):
    prefix = engine.prefill(p, max_new_tokens=new_tokens)
    first.append(prefix.token_B[0])
    state = engine.insert(prefix, state, slot)
  steps = []
  while True:
    state, out = engine.generate(state)
    steps.append(out)
    if not bool(state.active_B.any()):
      break
  tokens = np.concatenate([np.asarray(o.tokens_NB) for o in steps])      # [N, B]
  emitted = np.concatenate([np.asarray(o.emitted_NB) for o in steps])
  rows = [[int(first[b])] + tokens[emitted[:, b], b].tolist() for b in range(len(prompts))]
  return np.asarray(rows, np.int32)


# -- slm_jax: uncached ----------------------------------------------------------------------------
def uncached_runner(model, batch: int, max_length: int, bucket: int):
  """A greedy generator that recomputes the whole sequence at every step (no cache)."""
  graphdef, params = nnx.split(model)
  ids = sampling.ModalityIds.from_vocab(model.cfg.vocab)

  @jax.jit
  def next_token(params, tokens_BL, length):
    m = nnx.merge(graphdef, params)
    index_BL = jnp.broadcast_to(jnp.arange(tokens_BL.shape[1], dtype=jnp.int32), tokens_BL.shape)
    segment_ids_BL = (index_BL < length).astype(jnp.int32)
    h_BLD = m(tokens_BL, segment_ids_BL, index_BL)
    logits_BV = m.heads.logits(h_BLD[:, length - 1])
    mode_B = jnp.full((tokens_BL.shape[0],), sampling.MODE_ANY, jnp.int32)
    allowed_BV = sampling.allowed_ids(ids, mode_B, mode_B, logits_BV.shape[-1])
    return jnp.argmax(sampling.apply_mask(logits_BV, allowed_BV), -1).astype(jnp.int32)

  def padded(n):
    return min(-(-n // bucket) * bucket, max_length)

  def compile_all(prompt_len, new_tokens):
    for n in sorted({padded(n) for n in range(prompt_len, prompt_len + new_tokens)}):
      next_token(params, jnp.ones((batch, n), jnp.int32), jnp.int32(1)).block_until_ready()

  def run(prompts: np.ndarray, new_tokens: int) -> np.ndarray:
    b, n = prompts.shape
    buf = np.zeros((b, max_length), np.int32)
    buf[:, :n] = prompts
    out = np.zeros((b, new_tokens), np.int32)
    for i in range(new_tokens):
      length = n + i
      tok = np.asarray(next_token(params, jnp.asarray(buf[:, :padded(length)]), jnp.int32(length)))
      out[:, i] = tok
      if length < max_length:
        buf[:, length] = tok
    return out

  return compile_all, run


# -- transformers ---------------------------------------------------------------------------------
def hf_model(model):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from slm_jax.export.hf_export import export_hf_checkpoint  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as d:
    export_hf_checkpoint(model, d)
    hf = transformers.LlamaForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                       attn_implementation="sdpa")
  hf.eval()
  hf.generation_config.pad_token_id = 0
  hf.generation_config.eos_token_id = None
  return hf


def pick_torch_threads(choices: str, probe) -> int:
  """Sets torch's thread count to the fastest of `choices` for `probe()` (on a loaded machine
  two spinning OpenMP threads can be several times slower than one); returns it."""
  import torch  # pylint: disable=import-outside-toplevel
  timed = []
  for n in (int(c) for c in choices.split(",")):
    torch.set_num_threads(n)
    probe()
    timed.append((best_of(probe, 2)[0], n))
  torch.set_num_threads(min(timed)[1])
  return min(timed)[1]


def hf_generate(hf, prompts_hf: np.ndarray, new_tokens: int) -> np.ndarray:
  import torch  # pylint: disable=import-outside-toplevel
  ids = torch.tensor(prompts_hf, dtype=torch.long)
  with torch.inference_mode():
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                      min_new_tokens=new_tokens, do_sample=False, use_cache=True)
  return out[:, ids.shape[1]:].numpy()


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--gin_file", action="append", default=None, help="default: models/demo_14m.gin")
  p.add_argument("--gin_param", action="append", default=[])
  p.add_argument("--new_tokens", type=int, default=512)
  p.add_argument("--prompt_len", type=int, default=16)
  p.add_argument("--batch_sizes", default="1,8")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--steps_per_call", type=int, default=32)
  p.add_argument("--uncached_tokens", type=int, default=None,
                 help="new tokens of the uncached run (default --new_tokens); batch 1")
  p.add_argument("--uncached_bucket", type=int, default=64)
  p.add_argument("--ttft_prompt", type=int, default=256)
  p.add_argument("--hf_repeats", type=int, default=2)
  p.add_argument("--torch_threads", default="1,2",
                 help="torch thread counts to try; the fastest (on a short probe) is used")
  p.add_argument("--skip_hf", action="store_true")
  p.add_argument("--skip_uncached", action="store_true")
  p.add_argument("--skip_bf16", action="store_true")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  configuration.parse(args.gin_file or ["models/demo_14m.gin"], args.gin_param)
  cfg = build_lib.config_from_gin()
  model = build_lib.build(cfg, seed=0)
  new, plen = args.new_tokens, args.prompt_len
  max_length = max(plen + new, args.ttft_prompt + 1)
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  print(machine_info())
  print(f"model: {args.gin_file or ['models/demo_14m.gin']} {args.gin_param}: "
        f"{build_lib.param_count(model) / 1e6:.1f}M parameters, {cfg.num_layers} layers, "
        f"width {cfg.embed_dim}, {cfg.num_heads}/{cfg.num_kv_heads} heads, vocab "
        f"{cfg.padded_vocab_size} (padded), dtype {cfg.dtype}")
  print(f"greedy, prompt {plen} tokens, {new} new tokens, cache {max_length} positions, "
        f"steps_per_call {args.steps_per_call}, best of {args.repeats}; {load()}")
  start = time.perf_counter()
  rows = []                          # (what, batch, seconds, tokens/s, note)

  def add(*row):                     # progress as it goes: the full run takes minutes
    rows.append(row)
    print(f"  [{time.perf_counter() - start:4.0f} s] {row[0]}, batch {row[1]}: {row[3]:.1f} tokens/s",
          flush=True)

  cached_tps, engines = {}, {}

  def engine_for(batch, cache_dtype=None):
    key = (batch, cache_dtype)
    if key not in engines:
      engines[key] = Engine(model, slots=batch, max_length=max_length, stop_ids=(),
                            steps_per_call=args.steps_per_call, cache_dtype=cache_dtype,
                            buckets=sorted({plen, args.ttft_prompt, max_length}))
    return engines[key]

  for b in batch_sizes:
    engine = engine_for(b)
    prompts = text_prompts(cfg, b, plen, seed=b)
    engine_run(engine, prompts, new)                     # compile
    secs, tokens = best_of(lambda: engine_run(engine, prompts, new), args.repeats)  # noqa: B023
    assert tokens.shape == (b, new), tokens.shape
    cached_tps[b] = b * new / secs
    add("slm_jax cached (Engine)", b, secs, cached_tps[b], engine.memory_report())

  if not args.skip_uncached:
    n_unc = args.uncached_tokens or new
    compile_all, run = uncached_runner(model, 1, max_length, args.uncached_bucket)
    compile_all(plen, n_unc)
    prompts = text_prompts(cfg, 1, plen, seed=1)
    secs, tokens = best_of(lambda: run(prompts, n_unc), 1)
    ref = engine_run(engine_for(1), prompts, new)[:, :n_unc]
    same = int((tokens == ref).all(axis=0).sum())
    tps = n_unc / secs
    note = f"{same}/{n_unc} tokens equal the cached ones"
    if 1 in cached_tps:
      note += f"; cached / uncached = {cached_tps[1] / tps:.1f}x"
    add(f"slm_jax uncached ({n_unc} new)", 1, secs, tps, note)

  if not args.skip_hf:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    hf = hf_model(model)
    for b in batch_sizes:
      prompts_hf = text_prompts(cfg, b, plen, seed=b) - cfg.vocab.text_start
      pick_torch_threads(args.torch_threads, lambda: hf_generate(hf, prompts_hf, 16))  # noqa: B023
      secs, tokens = best_of(lambda: hf_generate(hf, prompts_hf, new), args.hf_repeats)  # noqa: B023
      assert tokens.shape == (b, new), tokens.shape
      tps = b * new / secs
      note = (f"torch {torch.__version__}, transformers {transformers.__version__}, "
              f"{torch.get_num_threads()} threads")
      if b in cached_tps:
        note += f"; slm_jax / transformers = {cached_tps[b] / tps:.2f}x"
      add("transformers generate (KV cache)", b, secs, tps, note)

  engine = engine_for(1)
  ttft_prompt = text_prompts(cfg, 1, args.ttft_prompt, seed=7)[0]
  first = lambda: engine.prefill(ttft_prompt, max_new_tokens=1).token_B.block_until_ready()  # noqa: E731
  first()
  secs, _ = best_of(first, args.repeats * 3)
  add(f"slm_jax TTFT ({args.ttft_prompt}-token prompt)", 1, secs, args.ttft_prompt / secs,
      "prefill + first token; tokens/s = prompt tokens/s")
  if not args.skip_hf:
    prompt_hf = ttft_prompt[None] - cfg.vocab.text_start
    pick_torch_threads(args.torch_threads, lambda: hf_generate(hf, prompt_hf, 1))
    secs, _ = best_of(lambda: hf_generate(hf, prompt_hf, 1), args.repeats * 3)
    add(f"transformers TTFT ({args.ttft_prompt}-token prompt)", 1, secs, args.ttft_prompt / secs,
        f"generate(max_new_tokens=1), {torch.get_num_threads()} threads")

  if not args.skip_bf16:
    b = max(batch_sizes)
    engine = engine_for(b, "bfloat16")
    prompts = text_prompts(cfg, b, plen, seed=b)
    f32 = engine_run(engine_for(b), prompts, new)
    bf16 = engine_run(engine, prompts, new)
    secs, _ = best_of(lambda: engine_run(engine, prompts, new), args.repeats)
    tps = b * new / secs
    agree = float((bf16 == f32).mean())
    note = (f"{engine.memory_report()}; {agree:.0%} of tokens equal float32's")
    if b in cached_tps:
      note += f"; bf16 / float32 cache = {tps / cached_tps[b]:.2f}x"
    add("slm_jax cached, bf16 cache", b, secs, tps, note)

  print(f"\n{'':38s} {'batch':>5s} {'seconds':>9s} {'tokens/s':>9s}  notes")
  for what, b, secs, tps, note in rows:
    print(f"{what:38s} {b:5d} {secs:9.3f} {tps:9.1f}  {note}")
  print(f"\n{load()}; total {time.perf_counter() - start:.0f} s")
  print("command: " + " ".join([os.path.basename(sys.executable), "bench/decode.py"] + sys.argv[1:]))


if __name__ == "__main__":
  main()
