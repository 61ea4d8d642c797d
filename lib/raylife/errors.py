"""The one exception type users see: a problem they can fix, stated with the fix."""


class RaylifeError(Exception):
    """A user-facing error. The CLI prints its message as one line and exits non-zero.

    Messages name the problem and the fix, e.g.
    "unknown model 'irs'; choose one of: boston, ionosphere, iris, mnist".
    """


class ArtifactError(RaylifeError):
    """A stored model version is missing, incomplete or corrupt."""


class InputError(RaylifeError):
    """Prediction input does not match the model's input schema."""
