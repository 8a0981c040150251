"""Audio tokenizers: waveforms <-> discrete audio tokens.

``MelKMeansTokenizer`` (weight-free, can decode) and ``W2vBertTokenizer`` (w2v-BERT 2.0
features + k-means, encode only) share the :class:`AudioTokenizer` interface; any saved
tokenizer loads with :func:`load_tokenizer`. See docs/audio.md.
"""

from .base import (
    PAD_TOKEN,
    AudioTokenizer,
    expand_repeats,
    is_saved_tokenizer,
    load_tokenizer,
    merge_repeats,
)
from .frontend import AudioInputError, load_audio, prepare_waveform
from .kmeans import Codebook, KMeansConfig
from .mel_tokenizer import MelConfig, MelKMeansTokenizer
from .w2v_bert_tokenizer import W2vBertTokenizer

__all__ = [
    "PAD_TOKEN",
    "AudioInputError",
    "AudioTokenizer",
    "Codebook",
    "KMeansConfig",
    "MelConfig",
    "MelKMeansTokenizer",
    "W2vBertTokenizer",
    "expand_repeats",
    "is_saved_tokenizer",
    "load_audio",
    "load_tokenizer",
    "merge_repeats",
    "prepare_waveform",
]
