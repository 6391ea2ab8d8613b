"""The results dict as scalars, JSON and a table; per-speaker ASR scoring."""
import json

import numpy as np
import pytest

from slm_jax.evaluation import asr_eval, report
from slm_jax.tools import plot_metrics

RESULTS = {
    "step": 7,
    "loss": {"demo_asr": {"loss/ce": 2.0, "perplexity": float(np.exp(2.0)), "tokens/weight": 10.0}},
    "asr": {"test": asr_eval.score_transcripts(
        ["one two", "three four", "five six"], ["one two", "", "five"], ["a", "a", "b"])},
    "pairwise": {"words": {"speech": {"accuracy": 0.75, "pairs": 4, "ties": 0, "mean_margin": 0.1}}},
}


def test_scores_per_speaker_and_overall():
  asr = RESULTS["asr"]["test"]
  assert asr["wer"] == pytest.approx(3 / 6) and asr["per_speaker"]["a"]["wer"] == 0.5
  assert asr["per_speaker"]["b"]["wer"] == 0.5 and asr["per_speaker"]["b"]["utterances"] == 1
  assert "deranged_wer" not in asr["per_speaker"]["b"]["baseline"]     # one utterance: none


def test_scalars_json_table_and_tensorboard(tmp_path):
  s = report.scalars(dict(RESULTS, asr={"test": dict(RESULTS["asr"]["test"],
                                                     examples=[{"x": 1.0}])}))
  assert s["asr/test/cer"] == RESULTS["asr"]["test"]["cer"]
  assert s["pairwise/words/speech/accuracy"] == 0.75 and s["loss/demo_asr/loss/ce"] == 2.0
  assert s["asr/test/per_speaker/a/wer"] == 0.5 and not any("examples" in k for k in s)
  report.write_json(RESULTS, str(tmp_path / "r.json"))
  assert json.load(open(tmp_path / "r.json"))["asr"]["test"]["utterances"] == 3
  table = report.format_table(RESULTS)
  assert "50.0%" in table and "75.0% (4)" in table and "demo_asr" in table
  report.write_tensorboard(RESULTS, str(tmp_path / "tb"), step=7)
  tags = plot_metrics.read_scalars(str(tmp_path / "tb"))
  assert tags["eval/pairwise/words/speech/accuracy"] == [(7, 0.75)]
