"""kubectl against the local cluster, as the pipeline tests drive it: the real kubectl built with
kube-apiserver, the local kubeconfig, the ``privileged`` context; a failing command fails the
test with kubectl's own words."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from tracecheck.stack.local import LocalStack


@dataclass(frozen=True, slots=True)
class Kubectl:
    binary: str
    kubeconfig: str

    @classmethod
    def of(cls, stack: LocalStack) -> Kubectl:
        return cls(str(stack.binary("kubectl")), str(stack.kubeconfig))

    def run(self, *args: str, stdin: str | None = None, timeout: float = 180.0) -> str:
        proc = subprocess.run(
            [self.binary, "--kubeconfig", self.kubeconfig, "--context", "privileged", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr.strip()}"
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))
