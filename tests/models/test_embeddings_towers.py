"""Tied vs untied embeddings; modality towers see only their own modality."""
import jax.numpy as jnp
import numpy as np

from model_testing import L, make, tiny, tiny_towers
from slm_jax.models.build import param_count


def test_tied_head_reads_the_embedding_table():
  cfg = tiny()
  model = make(cfg)
  assert model.heads.kernel is None and model.heads.tied_embed is model.towers.embed
  h = jnp.ones((1, 2, cfg.embed_dim))
  before = model.heads.logits(h)
  table = model.towers.embed.table.get_value()
  np.testing.assert_allclose(before[..., :cfg.vocab.size], (h @ table.T)[..., :cfg.vocab.size], rtol=1e-5)
  model.towers.embed.table.set_value(table * 2)
  np.testing.assert_allclose(model.heads.logits(h)[..., :cfg.vocab.size], 2 * before[..., :cfg.vocab.size], rtol=1e-5)


def test_untied_head_is_independent_of_the_embedding_table():
  tied, untied = make(tiny()), make(tiny(tie_embeddings=False))
  cfg = untied.cfg
  assert param_count(untied) - param_count(tied) == cfg.embed_dim * cfg.padded_vocab_size
  h = jnp.ones((1, 2, cfg.embed_dim))
  before = untied.heads.logits(h)
  untied.towers.embed.table.set_value(untied.towers.embed.table.get_value() * 2)
  np.testing.assert_array_equal(untied.heads.logits(h), before)


def _mixed_document(cfg):
  """text x5, speech x6, text x5 in one document: [B=1, L]."""
  v = cfg.vocab
  rng = np.random.default_rng(8)
  kinds = np.array([0] * 5 + [1] * 6 + [0] * (L - 11))
  ids = np.where(kinds == 1, rng.integers(v.speech_start, v.size, L), rng.integers(v.text_start, v.speech_start, L))
  return jnp.asarray(ids[None], jnp.int32), jnp.ones((1, L), jnp.int32), jnp.arange(L, dtype=jnp.int32)[None]


def test_towers_see_only_their_own_modality():
  cfg = tiny_towers()
  model = make(cfg)
  tokens, seg, pos = _mixed_document(cfg)
  v = cfg.vocab
  speech_at, text_after = 7, 12
  changed = tokens.at[0, speech_at].set(v.speech_start + (int(tokens[0, speech_at]) - v.speech_start + 1) % 24)
  tower_a, tower_b = model.towers(tokens, seg, pos), model.towers(changed, seg, pos)
  final_a, final_b = model(tokens, seg, pos), model(changed, seg, pos)
  # The text tower's output at a later text position ignores the speech token ...
  np.testing.assert_array_equal(tower_a[0, text_after], tower_b[0, text_after])
  np.testing.assert_array_equal(tower_a[0, :5], tower_b[0, :5])
  # ... the speech tower's output at a later speech position does see it ...
  assert np.abs(np.asarray(tower_a[0, speech_at + 1] - tower_b[0, speech_at + 1])).max() > 1e-4
  # ... and after the shared decoder the text position sees it too.
  assert np.abs(np.asarray(final_a[0, text_after] - final_b[0, text_after])).max() > 1e-4
  # Symmetrically: changing an early text token leaves the speech tower's outputs unchanged.
  changed_text = tokens.at[0, 1].set(v.text_start + (int(tokens[0, 1]) - v.text_start + 1) % 40)
  tower_c = model.towers(changed_text, seg, pos)
  np.testing.assert_array_equal(tower_a[0, 5:11], tower_c[0, 5:11])
  assert np.abs(np.asarray(tower_a[0, 12] - tower_c[0, 12])).max() > 1e-4


def test_without_tower_layers_towers_are_plain_embeddings():
  cfg = tiny()
  model = make(cfg)
  tokens, seg, pos = _mixed_document(cfg)
  np.testing.assert_array_equal(model.towers(tokens, seg, pos),
                                jnp.take(model.towers.embed.table.get_value(), tokens, axis=0))
