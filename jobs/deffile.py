"""Read an Apptainer definition file without Apptainer: header, sections, labels, %files, templates.

Standard library only, so `python -m jobs.image` on a login node, the tests and the test stand-in
of `apptainer` can all use it. Apptainer itself is the authority on the format; this parser covers
what `edgeflow.def` uses and rejects the rest loudly (an unknown section or an unresolved `{{ var }}`
is an error, never a silent skip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Sections Apptainer knows (app sections like %appinstall are not used by edgeflow.def).
KNOWN_SECTIONS = frozenset({
    "arguments", "setup", "files", "environment", "post", "runscript", "startscript", "test",
    "labels", "help",
})
_SECTION_RE = re.compile(r"^%([A-Za-z]+)\b(.*)$")
_TEMPLATE_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_HEADER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\s*:\s*(.*)$")


class DefFileError(ValueError):
    """A definition file that cannot be read as edgeflow expects; the message names file and line."""


@dataclass
class Section:
    name: str
    options: str   # text after the section name, e.g. "-c /bin/bash"
    body: str      # the section's lines, common indentation removed
    line: int      # 1-based line of the %name line


@dataclass
class DefFile:
    path: str
    header: dict[str, str]
    sections: dict[str, Section]
    arguments: dict[str, str] = field(default_factory=dict)

    def section(self, name: str) -> Section:
        if name not in self.sections:
            raise DefFileError(f"{self.path}: no %{name} section")
        return self.sections[name]

    @property
    def labels(self) -> dict[str, str]:
        return parse_labels(self.sections["labels"].body) if "labels" in self.sections else {}

    @property
    def files(self) -> list[tuple[str, str]]:
        return parse_files(self.sections["files"].body) if "files" in self.sections else []


@dataclass(frozen=True)
class ImageRef:
    """A Docker reference split into parts: `name[:tag][@digest]`."""

    name: str
    tag: str
    digest: str

    @property
    def pinned(self) -> bool:
        """A content digest or an exact version tag (2.21.0-gpu; not latest-gpu, nightly or none)."""
        return bool(self.digest) or bool(re.match(r"^v?\d+\.\d+", self.tag))


def _dedent(lines: list[str]) -> str:
    indents = [len(s) - len(s.lstrip()) for s in lines if s.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(s[cut:] for s in lines).strip("\n")


def _split(text: str, path: str) -> tuple[dict[str, str], list[Section]]:
    header: dict[str, str] = {}
    sections: list[Section] = []
    current: tuple[str, str, int] | None = None
    body: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        match = _SECTION_RE.match(raw)
        if match:
            if current is not None:
                sections.append(Section(current[0], current[1], _dedent(body), current[2]))
            name = match.group(1).lower()
            if name not in KNOWN_SECTIONS:
                raise DefFileError(f"{path}:{number}: unknown section %{match.group(1)}")
            current, body = (name, match.group(2).strip(), number), []
            continue
        if current is not None:
            body.append(raw)
            continue
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        hmatch = _HEADER_RE.match(stripped)
        if not hmatch:
            raise DefFileError(f"{path}:{number}: expected a header line 'Keyword: value', got {stripped!r}")
        key = hmatch.group(1).lower()
        if key in header:
            raise DefFileError(f"{path}:{number}: header keyword {hmatch.group(1)!r} given twice")
        header[key] = hmatch.group(2).strip()
    if current is not None:
        sections.append(Section(current[0], current[1], _dedent(body), current[2]))
    return header, sections


def parse_arguments(body: str) -> dict[str, str]:
    """%arguments: `NAME=default` per line (comments and blank lines allowed)."""
    out: dict[str, str] = {}
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name.strip()):
            raise DefFileError(f"%arguments: expected NAME=value, got {line!r}")
        out[name.strip()] = value.strip()
    return out


def parse_labels(body: str) -> dict[str, str]:
    """%labels: the first word of a line is the key, the rest of the line is the value."""
    out: dict[str, str] = {}
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key in out:
            raise DefFileError(f"%labels: label {key!r} given twice")
        out[key] = value.strip()
    return out


def parse_files(body: str) -> list[tuple[str, str]]:
    """%files: `SRC [DST]` per line; DST defaults to SRC like Apptainer does."""
    out: list[tuple[str, str]] = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2:
            raise DefFileError(f"%files: expected 'SRC [DST]', got {line!r}")
        out.append((parts[0], parts[-1]))
    return out


def template_names(text: str) -> set[str]:
    return set(_TEMPLATE_RE.findall(text))


def render(text: str, values: dict[str, str], *, path: str = "definition") -> str:
    """Replace every `{{ name }}` like `apptainer build --build-arg` does; unknown names are an error."""
    missing = sorted(template_names(text) - set(values))
    if missing:
        raise DefFileError(f"{path}: no value for {', '.join(missing)} (give it in %arguments or as "
                           "--build-arg)")
    return _TEMPLATE_RE.sub(lambda m: values[m.group(1)], text)


def parse(text: str, *, path: str = "definition", build_args: dict[str, str] | None = None) -> DefFile:
    """Parse a definition, with `{{ var }}` filled from %arguments defaults overridden by build_args."""
    _, raw_sections = _split(text, path)
    arguments: dict[str, str] = {}
    for s in raw_sections:
        if s.name == "arguments":
            arguments.update(parse_arguments(s.body))
    values = {**arguments, **{k: str(v) for k, v in (build_args or {}).items()}}
    unknown = sorted(set(build_args or {}) - template_names(text))
    if unknown:
        raise DefFileError(f"{path}: build args {', '.join(unknown)} are not used by the definition")
    header, sections = _split(render(text, values, path=path), path)
    if "bootstrap" not in header:
        raise DefFileError(f"{path}: the header has no 'Bootstrap:' line")
    by_name: dict[str, Section] = {}
    for s in sections:
        if s.name in by_name:
            # Apptainer appends repeated sections; edgeflow.def keeps one of each for readability.
            raise DefFileError(f"{path}:{s.line}: section %{s.name} given twice")
        by_name[s.name] = s
    return DefFile(path=path, header=header, sections=by_name, arguments=arguments)


def load(path: str | Path, build_args: dict[str, str] | None = None) -> DefFile:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DefFileError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(text, path=str(path), build_args=build_args)


def parse_image_ref(ref: str) -> ImageRef:
    """Split `registry/name:tag@sha256:...`; a ':' after the last '/' starts the tag."""
    ref = ref.strip()
    if ref.startswith("docker://"):
        ref = ref[len("docker://"):]
    if not ref or any(c.isspace() for c in ref):
        raise DefFileError(f"image reference {ref!r} is empty or has spaces")
    name, _, digest = ref.partition("@")
    if digest and not re.match(r"^sha256:[0-9a-f]{64}$", digest):
        raise DefFileError(f"image reference {ref!r}: digest must be sha256:<64 hex digits>")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return ImageRef(name=name, tag=tag, digest=digest)


def read_constraints(path: str | Path) -> dict[str, str]:
    """`name==version` lines of a pip constraints file, keyed by normalised name (PEP 503)."""
    out: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)$", line)
        if not match:
            raise DefFileError(f"{path}:{number}: expected 'name==version', got {raw.strip()!r}")
        out[normalize_name(match.group(1))] = match.group(2)
    return out


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
