"""The task registry: every hook it names resolves and has the signature its Protocol says, and the package root
loads its public classes lazily (importing the trainer imports no task)."""

import inspect
import subprocess
import sys

import pytest

from folio.tasks import COMMANDS, TASKS
from folio.tasks.registry import HOOKS, Inference

P = inspect.Parameter


def signature_problems(actual: inspect.Signature, expected: inspect.Signature) -> list[str]:
    """How a hook's signature fails to accept every call its Protocol allows (empty: it conforms).

    A positional-only parameter of the Protocol is matched by position, any other by name; a parameter the
    Protocol lets callers leave out must have a default in the hook; the hook's extra parameters must too.
    """
    params = list(actual.parameters.values())
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    star_args = any(p.kind is P.VAR_POSITIONAL for p in params)
    star_kwargs = any(p.kind is P.VAR_KEYWORD for p in params)
    matched, problems = set(), []
    for index, want in enumerate(expected.parameters.values()):
        if want.kind is P.POSITIONAL_ONLY:
            have = positional[index] if index < len(positional) else None
            if have is None and not star_args:
                problems.append(f"no positional parameter #{index} ({want.name})")
        else:
            have = actual.parameters.get(want.name)
            if have is None and not star_kwargs or have is not None and have.kind in (P.POSITIONAL_ONLY, P.VAR_POSITIONAL):
                problems.append(f"no keyword parameter {want.name!r}")
                have = None
        if have is not None:
            matched.add(have.name)
            if want.default is not P.empty and have.default is P.empty:
                problems.append(f"{have.name!r} needs a default (callers may leave it out)")
    problems += [f"extra parameter {p.name!r} has no default" for p in params
                 if p.name not in matched and p.default is P.empty and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]
    return problems


def test_every_registered_hook_resolves_and_matches_its_protocol():
    from folio.serve.api import PageTab

    checked = []
    for command in [*TASKS.values(), *COMMANDS.values()]:
        for field, protocol in [*HOOKS.items(), ("page", PageTab)]:
            hook = command.hook(field) if hasattr(command, field) else None
            if hook is None:
                continue
            where = f"{command.name}.{field} ({getattr(command, field)})"
            if protocol is PageTab:
                assert isinstance(hook, PageTab), where
                continue
            if protocol is Inference:
                hook, protocol = hook.from_pretrained, Inference.from_pretrained
            else:
                protocol = protocol.__call__
            expected = inspect.signature(protocol)
            if "self" in expected.parameters:
                expected = expected.replace(parameters=list(expected.parameters.values())[1:])
            assert signature_problems(inspect.signature(hook), expected) == [], where
            checked.append(where)
    # every task and command has its cli; the tasks served and exported today keep their hooks
    assert sum(".cli " in w for w in checked) == len(TASKS) + len(COMMANDS)
    assert {w.split(".")[0] for w in checked if ".routes " in w} == {"embed", "lm", "classify", "translate", "caption"}
    assert {w.split(".")[0] for w in checked if ".export " in w} == {"lm", "classify", "translate"}


def test_the_signature_check_refuses_a_drifted_hook():
    from folio.tasks.registry import ExportGraphs

    expected = inspect.signature(ExportGraphs.__call__)
    expected = expected.replace(parameters=list(expected.parameters.values())[1:])

    def drifted(directory, config, fmt): ...  # the documented signature before hooks were typed

    def conforming(path, fmt, quantize=False): ...

    assert signature_problems(inspect.signature(drifted), expected) == ["extra parameter 'fmt' has no default"]
    assert signature_problems(inspect.signature(conforming), expected) == []
    loader = inspect.signature(Inference.from_pretrained)
    assert signature_problems(inspect.signature(lambda directory: None), loader) == ["no keyword parameter 'device'"]


@pytest.mark.parametrize("module", ["folio.training", "folio.training.run", "folio.data", "folio"])
def test_importing_a_lower_floor_imports_no_task(module):
    """The package root names its public classes lazily (`folio.LanguageModel` imports `folio.tasks.lm` when
    first asked for), so the trainer, the data and the root itself load without any task."""
    code = (f"import sys, {module}, folio; tasks = sorted(m for m in sys.modules if m.startswith('folio.tasks'));"
            "print(tasks); assert not tasks; assert folio.__version__; "
            "assert folio.LanguageModel.__module__ == 'folio.tasks.lm.inference'; "
            "assert 'folio.tasks.lm' in sys.modules and 'folio.tasks.caption' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
