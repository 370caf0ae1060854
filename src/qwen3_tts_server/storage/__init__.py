"""Blob storage shared by every replica: see `blobs.BlobStore`."""
