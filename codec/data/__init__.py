"""Audio data: the embedded speech and synthetic corpora, folders of wav/flac, segment and utterance datasets."""

from codec.data.audio_io import AudioFileError, read_audio, write_audio
from codec.data.modules import AudioDataModule, DataError, FolderDataModule, SpeechDataModule, SyntheticDataModule

__all__ = [
    "AudioDataModule",
    "AudioFileError",
    "DataError",
    "FolderDataModule",
    "SpeechDataModule",
    "SyntheticDataModule",
    "read_audio",
    "write_audio",
]
