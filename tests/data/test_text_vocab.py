"""Text vocabularies: sentencepiece train/load, bytes, HF tokenizers JSON; encode_words; tf.data."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from slm_jax.data.text import (ByteVocab, HFTokenizerVocab, SentencePieceVocab,
                               get_text_vocabulary, train_sentencepiece)

_WORDS = ("the a of to and in is it you that he was for on are with as his they be at one have "
          "this from or had by word but what some we can out other were all there when up use "
          "your how said an each she which do their time if will way about many then them write "
          "would like so these her long make thing see him two has look more day could go come "
          "did number sound no most people my over know water than call first who may down side "
          "been now find any new work part take get place made live where after back little only "
          "round man year came show every good me give our under name very through just form").split()

SENTENCES = ["The quick brown fox jumps over the lazy dog.",
             "Hello, world! It's a fine day; isn't it?",
             "Numbers like 42 and 3.14 are words too."]


def _corpus(rng_seed=0, n=1500):
  rng = np.random.default_rng(rng_seed)
  lines = [" ".join(rng.choice(_WORDS, rng.integers(4, 14))).capitalize() + "." for _ in range(n)]
  return lines + SENTENCES * 5


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
  d = tmp_path_factory.mktemp("spm")
  corpus = d / "corpus.txt"
  corpus.write_text("\n".join(_corpus()) + "\n")
  return train_sentencepiece(str(corpus), 300, str(d / "spm"))


@pytest.fixture(scope="module")
def hf_json(tmp_path_factory):
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_corpus(), trainer)
  path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
  tok.save(str(path))
  return str(path)


def _vocabs(spm_model, hf_json):
  return {"sentencepiece": get_text_vocabulary("sentencepiece", spm_model),
          "bytes": get_text_vocabulary("bytes"),
          "hf_tokenizers": get_text_vocabulary("hf_tokenizers", hf_json)}


KINDS = ["sentencepiece", "bytes", "hf_tokenizers"]


def test_sentencepiece_train_and_load(spm_model):
  v = SentencePieceVocab(spm_model)
  assert v.size == 300 and (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
  assert v.name.startswith("sentencepiece:") and len(v.name.split(":")[1]) == 40
  assert SentencePieceVocab(spm_model).name == v.name  # stable identity
  ids = v.encode(SENTENCES[0])
  assert v.decode(ids) == SENTENCES[0]


def test_sentencepiece_identity_changes_with_model(spm_model, tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(_corpus()) + "\n")
  again = SentencePieceVocab(train_sentencepiece(str(corpus), 300, str(tmp_path / "elsewhere")))
  assert again.name == SentencePieceVocab(spm_model).name  # deterministic, path-independent
  corpus = tmp_path / "c.txt"
  corpus.write_text("\n".join(_corpus(rng_seed=1)) + "\n")
  other = SentencePieceVocab(train_sentencepiece(str(corpus), 250, str(tmp_path / "o")))
  assert other.name != SentencePieceVocab(spm_model).name and other.size == 250


def test_sentencepiece_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="train-spm"):
    SentencePieceVocab(str(tmp_path / "missing.model"))
  tiny = tmp_path / "tiny.txt"
  tiny.write_text("a b c\n")
  with pytest.raises(ValueError, match="vocab_size"):
    train_sentencepiece(str(tiny), 5000, str(tmp_path / "t"))


@pytest.mark.parametrize("kind", KINDS)
def test_encode_words_concatenation_equals_sentence(kind, spm_model, hf_json):
  v = _vocabs(spm_model, hf_json)[kind]
  for sentence in SENTENCES:
    words = sentence.split()
    ids, lens = v.encode_words(words)
    assert ids.dtype == np.int32 and lens.dtype == np.int32
    assert lens.shape == (len(words),) and lens.sum() == ids.shape[0] and (lens > 0).all()
    assert ids.tolist() == list(v.encode(sentence))
    assert v.decode(ids.tolist()) == sentence
    # each word's slice decodes to that word (modulo the separating space)
    ends = np.cumsum(lens)
    for w, s, e in zip(words, ends - lens, ends):
      assert v.decode(ids[s:e].tolist()).strip() == w
  ids, lens = v.encode_words([])
  assert ids.shape == (0,) and lens.shape == (0,)


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_in_tf_data_map(kind, spm_model, hf_json):
  v = _vocabs(spm_model, hf_json)[kind]
  ds = tf.data.Dataset.from_tensor_slices({"text": SENTENCES})

  def tokenize(ex):
    words = tf.strings.split(ex["text"])
    ids, lens = v.encode_words_tf(words)
    return {"ids": v.encode_tf(ex["text"]), "word_ids": ids, "word_lens": lens,
            "decoded": v.decode_tf(v.encode_tf(ex["text"]))}

  out = list(ds.map(tokenize).as_numpy_iterator())
  for sentence, ex in zip(SENTENCES, out):
    want_ids, want_lens = v.encode_words(sentence.split())
    assert ex["ids"].tolist() == list(v.encode(sentence))
    assert ex["word_ids"].tolist() == want_ids.tolist()
    assert ex["word_lens"].tolist() == want_lens.tolist()
    assert ex["decoded"].decode() == sentence


@pytest.mark.parametrize("kind", KINDS)
def test_seqio_tokenize_preprocessor(kind, spm_model, hf_json):
  v = _vocabs(spm_model, hf_json)[kind]
  ds = tf.data.Dataset.from_tensor_slices({"targets": SENTENCES})
  ds = seqio.preprocessors.tokenize(
      ds, output_features={"targets": seqio.Feature(v, add_eos=False)}, copy_pretokenized=True)
  for sentence, ex in zip(SENTENCES, ds.as_numpy_iterator()):
    assert ex["targets"].tolist() == list(v.encode(sentence))
    assert ex["targets_pretokenized"].decode() == sentence


def test_byte_vocab():
  v = ByteVocab()
  assert v.size == 256 and v.name == "bytes:utf-8" and v.eos_id is None
  assert v.encode("hé") == [104, 195, 169]
  assert v.decode([104, 195, 169]) == "hé"
  assert v.encode_tf(tf.constant("hé")).numpy().tolist() == [104, 195, 169]
  ids, lens = v.encode_words(["hé", "ho"])
  assert ids.tolist() == [104, 195, 169, 32, 104, 111] and lens.tolist() == [3, 3]


def test_hf_tokenizer_vocab(hf_json, tmp_path):
  v = HFTokenizerVocab(hf_json)
  assert v.size == 400 and v.eos_id == v.tokenizer.token_to_id("<|endoftext|>")
  assert v.name.startswith("hf_tokenizers:")
  assert HFTokenizerVocab(hf_json, min_size=512).size == 512  # padded like an HF embedding table
  import os
  assert HFTokenizerVocab(os.path.dirname(hf_json)).name == v.name  # a model directory works
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    HFTokenizerVocab(str(tmp_path / "nope"))
  import pickle
  assert pickle.loads(pickle.dumps(v)).encode("the dog") == v.encode("the dog")


def test_factory_errors():
  with pytest.raises(ValueError, match="unknown text vocabulary kind"):
    get_text_vocabulary("wordpiece", "x")
  with pytest.raises(ValueError, match="needs a path"):
    get_text_vocabulary("sentencepiece")


@pytest.mark.parametrize("scheme", ["first", "always"])
def test_hf_metaspace_tokenizer_encode_words(scheme, tmp_path):
  """Llama-2 / sentencepiece-converted tokenizer.json files mark word starts with "▁"."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=scheme)
  tok.decoder = decoders.Metaspace(prepend_scheme=scheme)
  tok.train_from_iterator(_corpus(n=300), trainers.BpeTrainer(
      vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
  tok.save(str(tmp_path / "tokenizer.json"))
  v = HFTokenizerVocab(str(tmp_path))
  assert v.eos_id == 2
  for sentence in SENTENCES:
    ids, _ = v.encode_words(sentence.split())
    assert ids.tolist() == list(v.encode(sentence))
    assert v.decode(ids.tolist()) == sentence


def test_piece_spellings_concatenate_to_the_decoded_text(spm_model):
  """Character-level CTC targets (models/ctc_spelling.py) spell each id as decoding writes it."""
  v = SentencePieceVocab(spm_model)
  spellings = v.piece_spellings()
  assert len(spellings) == v.size and spellings[v.eos_id] == "" and spellings[v.unk_id] == ""
  for text in SENTENCES:
    ids = v.encode_batch([text])[0]
    assert "".join(spellings[i] for i in ids).strip() == v.decode(ids)
  b = ByteVocab()
  assert "".join(b.piece_spellings()[i] for i in b.encode_batch(["it's 5"])[0]) == "it's 5"


def test_a_vocabulary_that_cannot_spell_its_pieces_says_so(hf_json):
  from slm_jax.data.text import TextVocabError
  with pytest.raises(TextVocabError, match="character-level CTC"):
    HFTokenizerVocab(hf_json).piece_spellings()
