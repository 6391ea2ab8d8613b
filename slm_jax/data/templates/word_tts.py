"""Word-interleaved TTS: the text of each word just before its speech, so the model is told which
word it is speaking instead of having to learn the text -> speech alignment.

    [BOS] [TTS] [TEXT] w1 [SPEECH] speech(w1) [TEXT] w2 [SPEECH] speech(w2) ... [EOS]

Trained (loss weight 1): every speech position, each [TEXT] marker that follows a word's speech
(the model learns when a word's speech ends) and the final EOS. Not trained: [TTS], the first
[TEXT], the words' text ids and the [SPEECH] markers (the prompt side, given at generation).

Word speech tiles the audio contiguously, cut at the boundary points between words exactly as
WordAlignedInterleave cuts its speech spans (`Utterance.boundary_tiles`): leading silence goes to
the first word, trailing silence to the last. Word timings are in speech positions already (the
tokenizer's frame rate, e.g. dMel at 50 Hz with `stack = 4` is 12.5 positions per second), so a
stacked tokenizer needs nothing here. A word whose tile is empty (timings that round to the same
position) is `[TEXT] w [SPEECH]` followed at once by the next [TEXT]. Generation with the same
layout, the words injected as the model ends each one: slm_jax/inference/word_tts.py.

Needs word timings: utterances without them are skipped ("no_alignment"), like the interleaving
templates. Truncation keeps the first k words whole ("words"), like TTS. The [TTS] tag makes the
auxiliary CTC loss (models/ctc.py) pair this example's frames, in order, with its word ids.
"""
from __future__ import annotations

import dataclasses

import gin

from slm_jax.data.templates.basic import TextToSpeechTags, append_speech_tiles, append_words_text
from slm_jax.data.templates.sequence import SequenceBuilder
from slm_jax.unified_vocab import UnifiedVocab


@gin.configurable
@dataclasses.dataclass(frozen=True)
class WordTTS(TextToSpeechTags):
  """[BOS] [TTS] ([TEXT] word [SPEECH] its speech)... [EOS]; see the module docstring."""
  name = "tts_words"
  needs_alignment = True

  def build(self, utt, plan, vocab: UnifiedVocab) -> SequenceBuilder:
    seq = SequenceBuilder(vocab).special(self.task_tag)
    bounds = utt.boundary_tiles()
    for w in range(utt.num_words):
      seq.special(self.text_marker, trained=w > 0)   # after word w-1's speech: "it ended"
      append_words_text(seq, utt, w, w + 1, trained=False)
      seq.special(self.speech_marker, trained=False)
      append_speech_tiles(seq, utt, bounds, w, w + 1, trained=True)
    return seq
