"""Recognise an upload's container from its first bytes.

Filenames and client-sent content types are whatever the client says; the bytes are what
libsndfile will parse. Checking a few magic numbers first means only the four containers we
accept ever reach libsndfile, whose many other parsers (AIFF, PAF, VOC, MAT, ...) are
attack surface for no benefit.
"""

from __future__ import annotations

WAV = "audio/wav"
MP3 = "audio/mpeg"
OGG = "audio/ogg"
FLAC = "audio/flac"

_ID3_HEADER_LEN = 10
_ID3_FOOTER_FLAG = 0x10
_OGG_CODECS = (b"OpusHead", b"\x01vorbis")


def sniff(data: bytes) -> str | None:
    """Media type of `data` if it starts like WAV, MP3, OGG (Vorbis/Opus) or FLAC, else None."""
    if data[:3] == b"ID3":
        # An ID3v2 tag is an MP3 habit; what follows decides, and a tag followed by
        # something unrecognised is still left to the MP3 decoder (it resynchronises).
        return _sniff_untagged(data[_id3_length(data) :]) or MP3
    return _sniff_untagged(data)


def _sniff_untagged(head: bytes) -> str | None:
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return WAV
    if head[:4] == b"fLaC":
        return FLAC
    if head[:4] == b"OggS":
        return OGG if _ogg_first_packet(head).startswith(_OGG_CODECS) else None
    if _is_mpeg_audio_frame(head[:4]):
        return MP3
    return None


def _id3_length(data: bytes) -> int:
    """Total length of a leading ID3v2 tag (header + body + optional footer)."""
    size = 0
    for byte in data[6:10]:  # "syncsafe" integer: 7 bits per byte
        size = (size << 7) | (byte & 0x7F)
    footer = _ID3_HEADER_LEN if len(data) > 5 and data[5] & _ID3_FOOTER_FLAG else 0
    return _ID3_HEADER_LEN + size + footer


def _ogg_first_packet(head: bytes) -> bytes:
    """Start of the first packet of the first Ogg page: it names the codec."""
    if len(head) < 27:
        return b""
    start = 27 + head[26]  # fixed page header, then one lacing byte per segment
    return head[start : start + 8]


def _is_mpeg_audio_frame(header: bytes) -> bool:
    """An MPEG-1/2/2.5 audio frame header (layer I-III) with no reserved field values.

    The sync word alone (11 set bits) is common in random binary; rejecting reserved values
    also turns away ADTS AAC, whose "layer" bits are 00, which libsndfile cannot decode.
    """
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return False
    version = (header[1] >> 3) & 0b11
    layer = (header[1] >> 1) & 0b11
    bitrate = header[2] >> 4
    sample_rate = (header[2] >> 2) & 0b11
    return version != 0b01 and layer != 0b00 and bitrate != 0b1111 and sample_rate != 0b11
