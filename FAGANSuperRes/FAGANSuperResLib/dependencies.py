"""What the engine needs for a task, and installing it after asking (Qt-free).

The Slicer module passes Slicer's dialogs and installers (``slicer.util.confirmOkCancelDisplay``,
``slicer.util.pip_install``, PyTorchUtils); scripts and tests pass their own. Every failure of
an installer becomes one ``DependencyError`` with a one-line reason, so the caller can show a
single dialog. Nothing here touches the scene.
"""
import os
from typing import Any, Callable, Optional

from .engine import backendAvailable, installedTorchVersion, missingRequirements, torchProblem
from .errors import oneLine

SELFTEST_INSTALL_VARIABLE = "FAGAN_SELFTEST_INSTALL_DEPENDENCIES"
"""Set to 1 to let the self-tests install missing dependencies and run the heavy tests."""

Confirm = Callable[[str], bool]
PipInstall = Callable[[str], Any]
TorchInstall = Callable[[], Any]
"""Installs torch (PyTorchUtils) after its own confirmation; returns None if declined.
Raises ImportError when the PyTorch extension is missing."""


class DependencyError(RuntimeError):
    """A dependency could not be installed; the message is one line for the user."""


def missingDependencies(task: str) -> Optional[str]:
    """Why ``task`` cannot run in this Python yet (one line), or None when it can."""
    missing = missingRequirements(task)
    if missing:
        return f"missing Python packages: {', '.join(missing)}"
    if not backendAvailable(task):
        return str(torchProblem(installedTorchVersion())) + (" (nor ONNX Runtime)" if task == "fagan" else "")
    return None


def ensureDependencies(task: str, confirm: Confirm, pipInstall: PipInstall, installTorch: TorchInstall,
                       onInstalled: Optional[Callable[[], None]] = None) -> bool:
    """Install what ``task`` (``engine.TASKS``) needs, asking first with ``confirm``. A torch
    older than the engine's minimum counts as missing (PyTorchUtils installs one that fits).

    ``onInstalled`` is called after anything was installed (the module then checks the devices again).
    Returns False if the user declined; raises DependencyError if an install failed or the
    PyTorch extension is missing.
    """
    missing = missingRequirements(task)
    if missing:
        question = (f"FA-GAN needs these Python packages, which are not installed yet:\n{', '.join(missing)}\n\n"
                    "Install them now? (needs an internet connection)")
        if not confirm(question):
            return False
        try:
            pipInstall(" ".join(missing))
        except Exception as exc:
            raise DependencyError(f"installing {', '.join(missing)} failed ({oneLine(exc)}); "
                                  "check the internet connection, or install them offline (see the user guide)") from exc
        if onInstalled:
            onInstalled()
    if backendAvailable(task):
        return True
    try:
        torch = installTorch()
    except ImportError:
        raise DependencyError('FA-GAN needs PyTorch: install the "PyTorch" extension from the Extensions Manager, '
                              "restart Slicer, then try again") from None
    except Exception as exc:
        raise DependencyError(f"installing PyTorch failed ({oneLine(exc)}); check the internet connection") from exc
    if torch is not None and onInstalled:
        onInstalled()
    return torch is not None


def selfTestSkipReason(task: str) -> Optional[str]:
    """Why a heavy self-test of ``task`` is skipped, or None when it runs: it runs when the
    dependencies are importable, or when SELFTEST_INSTALL_VARIABLE=1 allows installing them."""
    if os.environ.get(SELFTEST_INSTALL_VARIABLE) == "1":
        return None
    reason = missingDependencies(task)
    return f"{reason}; set {SELFTEST_INSTALL_VARIABLE}=1 to install and run it" if reason else None

