"""The Zipper ablations at demo scale (docs/ablations.md): slm-sweep's default grid.

    slm-sweep --config configs/sweeps/zipper_demo.py --root runs/zipper_sweep [--corpus DIR]

The base is the demo recipe (configs/runs/demo.gin: dMel 50 Hz x 4, ASR + TTS + 0.25 text LM, the
auxiliary CTC loss) on a much shorter schedule (SCHEDULE: 120 steps of 8 x 256 instead of 960 of
8 x 256, no evaluation during training, one checkpoint at the end), so that the six runs and the
text LM fit in about half an hour on 2 shared CPU cores.
Every run keeps the CTC head (a Zipper's is on its speech tower). Rows:

  shared                     the demo's one decoder (4 x 192)
  zipper                     text + speech towers of 4 x 192, cross-attention after every layer
  zipper_x2, zipper_x4       cross-attention after every 2 / 4 layers
  zipper_x4_text_lm          cross every 4, the text tower warm started from a text LM pretrained
                             on the demo text (setup `text_lm`: 100 steps of 8 x 256 of the
                             demo's text LM task alone, a shared model shaped like the tower),
                             trainable
  zipper_x4_text_lm_frozen   the same with the text tower frozen (ablations/zipper_frozen_text.gin)

{corpus} is the demo corpus folder (make demo: data/demo_corpus; --corpus overrides), {root} the
sweep folder.
"""
import json
import os

import ml_collections

STEPS = 120
SCHEDULE = [f"TOTAL_STEPS = {STEPS}", "BATCH_SIZE = 8", "WARMUP_STEPS = 20",
            "train.periodic_evals = []",
            "train.eval_every = 0", "CheckpointOptions.save_every = 0",
            "CheckpointOptions.keep_last = 1"]
CORPUS = [
    "DEMO_CACHE = '{corpus}/cache/demo_main'",
    "DEMO_TEXT_TOKENIZER = '{corpus}/tokenizers/spm512.model'",
    "DEMO_SPEECH_TOKENIZER = '{corpus}/tokenizers/dmel50x4'",
    "DEMO_ASR_MANIFEST = '{corpus}/manifest_validation.jsonl'",
    "DEMO_PAIRWISE = '{corpus}/pairwise'",
]
# The text LM the pretrained-tower rows start from: the tower's shape as a shared model, trained
# on the demo_text_lm component of the demo cache alone, without the CTC head.
TEXT_LM = CORPUS + ["TOTAL_STEPS = 100"] + SCHEDULE[1:] + [
    "ModelConfig.num_heads = 4", "ModelConfig.num_kv_heads = 2", "ModelConfig.head_dim = 48",
    "ModelConfig.mlp_dim = 576", "ModelConfig.asr_ctc = False", "LossOptions.asr_ctc_weight = 0.0",
    "cached_task_data.train_split = 'train/demo_text_lm'",
    "cached_task_data.eval_split = 'validation/demo_text_lm'",
]
TEXT_LM_EXPORT = "{root}/text_lm/export"


def vocab_names(corpus):
  """The tokenizer names the demo cache was built with (UnifiedVocab checks them against the
  cache; `make demo` binds them the same way), read from its vocab_spec.json."""
  spec = os.path.join(corpus, "cache", "demo_main", "train", "demo_asr", "vocab_spec.json")
  if not os.path.exists(spec):     # no corpus yet: --print_jobs still shows the runs
    return []
  with open(spec) as f:
    names = json.load(f)
  return [f"UnifiedVocab.text_vocab_name = '{names['text_vocab_name']}'",
          f"UnifiedVocab.speech_tokenizer_name = '{names['speech_tokenizer_name']}'"]


def _zipper(name, *extra_files, params=()):
  return {"name": name, "gin_files": ["ablations/zipper.gin", *extra_files],
          "gin_params": list(params)}


def get_config(corpus="data/demo_corpus"):
  c = ml_collections.ConfigDict()
  vocab = vocab_names(corpus)
  c.base_gin_files = ["runs/demo.gin"]
  c.base_gin_params = CORPUS + vocab + SCHEDULE
  pretrained = [f"WarmStart.text_checkpoint = '{TEXT_LM_EXPORT}'"]
  # The shared row reads ASR prompts causally like the Zipper rows (which cannot read them
  # bidirectionally), so the rows differ in the architecture only; shared_bidir is today's demo.
  c.axes = {"model": [
      {"name": "shared", "gin_params": ["ModelConfig.bidirectional_speech_tags = ()"]},
      {"name": "shared_bidir"},
      _zipper("zipper"),
      _zipper("zipper_x2", "ablations/zipper_cross_every_2.gin"),
      _zipper("zipper_x4", "ablations/zipper_cross_every_4.gin"),
      _zipper("zipper_x4_text_lm", "ablations/zipper_cross_every_4.gin", params=pretrained),
      _zipper("zipper_x4_text_lm_frozen", "ablations/zipper_cross_every_4.gin",
              "ablations/zipper_frozen_text.gin", params=pretrained),
  ]}
  c.setup = [{
      "name": "text_lm",
      "creates": TEXT_LM_EXPORT + "/export_info.json",
      "commands": [
          ["slm-train", "--workdir={root}/text_lm", "--gin_file=runs/demo.gin"]
          + [f"--gin_param={p}" for p in vocab + TEXT_LM],
          ["slm-export", "--workdir", "{root}/text_lm", "--out", TEXT_LM_EXPORT,
           "--text_tokenizer", "{corpus}/tokenizers/spm512.model",
           "--speech_tokenizer", "{corpus}/tokenizers/dmel50x4"],
      ]}]
  # 64 held-out utterances (decoder and CTC transcripts), the validation cache's losses per task,
  # the 64 pairs of each pairwise set. No TTS loopback (minutes per run at this budget, and these
  # models do not yet speak intelligibly: docs/ablations.md), no joint CTC/attention decoding (a
  # beam search: a few greedy decodes per utterance, kept out of the short grid's budget).
  c.eval_args = ["--text_tokenizer", "{corpus}/tokenizers/spm512.model",
                 "--speech_tokenizer", "{corpus}/tokenizers/dmel50x4",
                 "--asr_manifest", "test={corpus}/manifest_test.jsonl", "--max_examples", "64",
                 "--max_new_tokens", "48",
                 "--loss_cache", "{corpus}/cache/demo_main",
                 "--pairwise_dir", "{corpus}/pairwise", "--pairwise_normalize",
                 "--no_joint"]
  c.columns = [
      "loss/demo_asr/loss/text_ce", "loss/demo_tts/loss/speech_ce", "loss/demo_text_lm/loss/text_ce",
      "asr/test/cer", "asr/test/ctc/cer", "pairwise/syntax/text/accuracy",
      "pairwise/cloze/text/accuracy", "pairwise/words/speech/accuracy",
  ]
  return c
