"""Every gin file under configs/ parses in the composition it documents (typos fail here)."""
import glob
import os

import gin
import pytest

from slm_jax import configuration

_COMPOSITIONS = {
    "runs/demo.gin": ["runs/demo.gin"],
    "runs/demo_long.gin": ["runs/demo.gin", "runs/demo_long.gin"],
    "runs/demo_spiritlm.gin": ["runs/demo_spiritlm.gin"],
    "runs/demo_synthetic.gin": ["runs/demo_synthetic.gin"],
    "runs/pretrain.gin": ["models/tiny.gin", "runs/pretrain.gin"],
    "ablations/remat_full_bf16.gin": ["runs/demo.gin", "ablations/remat_full_bf16.gin"],
    "ablations/towers_2x2.gin": ["runs/demo.gin", "ablations/towers_2x2.gin"],
    "ablations/span_interleave_speech30.gin": [
        "models/demo.gin", "tasks/demo_all.gin", "runs/pretrain.gin",
        "ablations/span_interleave_speech30.gin"],
    "ablations/zipper.gin": ["runs/demo.gin", "ablations/zipper.gin"],
    "ablations/zipper_frozen_text.gin": ["runs/demo.gin", "ablations/zipper.gin",
                                         "ablations/zipper_frozen_text.gin"],
    "ablations/kmeans_tokens.gin": ["runs/demo.gin", "ablations/kmeans_tokens.gin"],
}
for _k in (2, 4):
  _COMPOSITIONS[f"ablations/zipper_cross_every_{_k}.gin"] = [
      "runs/demo.gin", "ablations/zipper.gin", f"ablations/zipper_cross_every_{_k}.gin"]
_COMPOSITIONS["ablations/zipper_towers_128.gin"] = [
    "runs/demo.gin", "ablations/zipper.gin", "ablations/zipper_towers_128.gin"]
for _f in (10, 30, 50):
  _COMPOSITIONS[f"ablations/interleave_speech{_f}.gin"] = [
      "models/demo.gin", "tasks/demo_all.gin", "runs/pretrain.gin",
      f"ablations/interleave_speech{_f}.gin"]
for _path in glob.glob(os.path.join(configuration.CONFIGS_DIR, "*", "*.gin")):
  _name = os.path.relpath(_path, configuration.CONFIGS_DIR)
  if _name.startswith(("models/", "mesh/", "tasks/")):
    _COMPOSITIONS.setdefault(_name, ["models/tiny.gin", _name] if _name.startswith("mesh/")
                             else [_name])


# Values for the macros a run file leaves REQUIRED (the user sets them on the command line).
_REQUIRED_MACROS = {
    "runs/demo.gin": ["DEMO_CACHE = '/cache'", "DEMO_TEXT_TOKENIZER = '/t/spm512.model'",
                      "DEMO_SPEECH_TOKENIZER = '/t/dmel25'", "DEMO_ASR_MANIFEST = '/m.jsonl'",
                      "DEMO_PAIRWISE = '/pairwise'"],
    "runs/demo_spiritlm.gin": ["DEMO_CACHE = '/cache'"],
    "runs/pretrain.gin": ["TOTAL_STEPS = 10", "BATCH_SIZE = 8", "SEQ_LEN = 64"],
}


def _params_for(files):
  return [p for f in files for p in _REQUIRED_MACROS.get(f, [])]


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.parametrize("name", sorted(_COMPOSITIONS))
def test_config_parses(name):
  files = _COMPOSITIONS[name]
  configuration.parse(files, _params_for(files))


def test_a_required_macro_left_unset_is_a_clear_error():
  with pytest.raises(configuration.ConfigError, match="DEMO_CACHE"):
    configuration.parse(["runs/demo.gin"])


def test_every_config_file_is_covered():
  files = {os.path.relpath(p, configuration.CONFIGS_DIR)
           for p in glob.glob(os.path.join(configuration.CONFIGS_DIR, "**", "*.gin"), recursive=True)}
  assert files <= set(_COMPOSITIONS), sorted(files - set(_COMPOSITIONS))


def test_ablation_overrides_the_base_binding():
  configuration.parse(["runs/demo.gin", "ablations/towers_2x2.gin"], _params_for(["runs/demo.gin"]))
  assert gin.query_parameter("ModelConfig.text_tower_layers") == 2
  assert gin.query_parameter("ModelConfig.speech_tower_layers") == 2


def test_a_typo_names_the_binding():
  with pytest.raises(configuration.ConfigError, match="text_tower_layerz"):
    configuration.parse(["models/tiny.gin"], ["ModelConfig.text_tower_layerz = 2"])
