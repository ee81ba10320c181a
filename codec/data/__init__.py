"""Audio data: the embedded demo corpus, folders of wav/flac, segment and utterance datasets."""
from codec.data.audio_io import AudioFileError, read_audio, write_audio
from codec.data.modules import AudioDataModule, DataError, DemoDataModule, FolderDataModule

__all__ = [
    "AudioDataModule",
    "AudioFileError",
    "DataError",
    "DemoDataModule",
    "FolderDataModule",
    "read_audio",
    "write_audio",
]
