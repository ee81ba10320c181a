"""Token probes: what a frozen codec's codes tell small models about content and speaker.

A codec is also judged by what a language model can read from its tokens. The probes here train
small heads on frozen codes (:class:`TokenProbes`): a CTC character recognizer (content) and a
speaker classifier, each also with one group or one residual layer masked, so a sweep shows which
codebooks carry what. ``python -m codec.probe`` runs them on any checkpoint.
"""

from codec.probe.labels import LabelledCodes, ProbeDataError, encode_labelled
from codec.probe.probes import TokenProbes

__all__ = ["LabelledCodes", "ProbeDataError", "TokenProbes", "encode_labelled"]
