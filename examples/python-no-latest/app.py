"""An admission plugin in Python: refuse pods whose images are not pinned to a version.

The twin of plugins/no-latest (Rust); both implement the `admission` world of
wit/plugin.wit. Build with scripts/build-examples (componentize-py from PyPI).
"""

import json

from wit_world import exports
from wit_world.imports.admission_types import AdmissionResponse


def answer(allowed, message=None):
    return AdmissionResponse(allowed=allowed, message=message, code=None, patch=None, warnings=[])


def unpinned(image):
    name = image.rsplit("/", 1)[-1]
    return image.endswith(":latest") or (":" not in name and "@" not in name)


class Admit(exports.Admit):
    def configure(self, config):
        json.loads(config)

    def mutate(self, request):
        return answer(True)

    def validate(self, request):
        pod = json.loads(request.object) if request.object else {}
        spec = pod.get("spec", {})
        for field in ("initContainers", "containers"):
            for container in spec.get(field, []):
                image = container.get("image", "")
                if unpinned(image):
                    return answer(False, f"{image}: pin a version instead of latest")
        return answer(True)
