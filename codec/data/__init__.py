"""Audio data: the embedded speech and synthetic corpora, folders of wav/flac, segment and utterance datasets."""

from codec.data.audio_io import AudioFileError, read_audio, write_audio
from codec.data.modules import AudioDataModule, DataError, FolderDataModule, SpeechDataModule, SyntheticDataModule
from codec.data.shards import ShardDataModule

__all__ = [
    "AudioDataModule",
    "AudioFileError",
    "DataError",
    "FolderDataModule",
    "ShardDataModule",
    "SpeechDataModule",
    "SyntheticDataModule",
    "read_audio",
    "write_audio",
]
