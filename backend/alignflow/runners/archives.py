"""Uploaded zip archives: checked member by member before anything is written, then validated as a dataset.

zipfile's own ``extractall`` strips ``..`` and absolute paths silently and writes symlinks as files; a server
should refuse such an archive and say why, so the members are checked and extracted one by one here.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from alignflow.atomic import atomic_directory
from alignflow.data import list_images, scan_dataset
from alignflow.errors import InputError

UPLOAD_KINDS = ("dataset", "images")  # images/ + masks/ pairs, or a folder of images (references, targets, masks)


class ArchiveTooLarge(InputError):
    """The archive, or what it unpacks to, is over the server's limit (HTTP 413)."""


def _member_path(info: zipfile.ZipInfo, archive: str) -> PurePosixPath | None:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise InputError(archive, "member paths inside the archive (no absolute paths, no '..')", got=repr(info.filename))
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(archive, "plain files and folders (no symbolic links)", got=f"the link {info.filename!r}")
    parts = [part for part in path.parts if part not in ("", ".")]
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None  # macOS Finder metadata, not data
    return PurePosixPath(*parts)


def extract_archive(archive: Path, destination: Path, max_extracted_bytes: int, name: str = "upload") -> None:
    """Unpack ``archive`` to ``destination`` (atomically: all of it or nothing), refusing unsafe members."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            infos = zipped.infolist()
            encrypted = next((info.filename for info in infos if info.flag_bits & 0x1), None)
            if encrypted is not None:  # zipfile would ask for a password member by member (a RuntimeError)
                raise InputError(name, "an unencrypted zip archive (the server cannot ask for a password)",
                                 got=f"the encrypted member {encrypted!r}")
            members = [(info, _member_path(info, name)) for info in infos]
            total = sum(info.file_size for info in infos)
            if total > max_extracted_bytes:
                raise ArchiveTooLarge(name, f"at most {max_extracted_bytes} bytes once unpacked", got=f"{total} bytes")
            with atomic_directory(destination) as folder:
                written = 0
                for info, path in members:
                    if path is None:
                        continue
                    target = folder.joinpath(*path.parts)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zipped.open(info) as source, open(target, "wb") as sink:
                        # Headers can lie about sizes (zip bombs): count what is actually written.
                        while chunk := source.read(1 << 20):
                            written += len(chunk)
                            if written > max_extracted_bytes:
                                raise ArchiveTooLarge(name, f"at most {max_extracted_bytes} bytes once unpacked", got="more")
                            sink.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as error:  # zlib: corrupt deflate data
        raise InputError(name, "a valid zip archive", got=f"{type(error).__name__}: {error}") from None
    except (NotImplementedError, RuntimeError) as error:  # unsupported compression; a password asked for after all
        raise InputError(name, "a zip archive with plain deflate/stored members", got=str(error)) from None


def data_root_of(folder: Path) -> Path:
    """The folder that holds the data: an archive of ``set/images, set/masks`` unpacks to ``set`` (one level)."""
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("images", "masks"):
        return entries[0]
    return folder


def validate_upload(folder: Path, kind: str, name: str) -> dict[str, int]:
    """Check the unpacked set with the engine's dataset checks; raises InputError naming the archive's member."""
    root = data_root_of(folder)
    try:
        if kind == "dataset":
            dataset = scan_dataset(root)
            return {"pairs": len(dataset.pairs), "classes": len(dataset.class_values)}
        return {"images": len(list_images(root))}
    except InputError as error:
        # Name the member of the archive, not the server's folder.
        where = error.where.replace(str(folder), name) if error.where.startswith(str(folder)) else error.where
        raise InputError(where, error.expected, error.got) from None


def unpack_upload(archive: Path, destination: Path, kind: str, max_extracted_bytes: int, name: str) -> dict[str, int]:
    """Extract and validate; a set that fails validation is removed again. Returns its counts."""
    if kind not in UPLOAD_KINDS:
        raise InputError("kind", f"one of {', '.join(UPLOAD_KINDS)}", got=repr(kind))
    extract_archive(archive, destination, max_extracted_bytes, name)
    try:
        return validate_upload(destination, kind, name)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
