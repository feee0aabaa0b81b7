"""The ML's errors, importable without loading torch (the CLI maps them to one-line messages)."""


class UnknownEncoder(ValueError):
    """No encoder of that name (VERGE_ENCODER)."""


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be had (offline, not cached, unknown tag, unreadable file)."""

    def __init__(self, spec, detail: str):
        self.spec, self.detail = spec, detail
        super().__init__(
            f"pretrained weights '{spec.pretrained}' for encoder '{spec.name}' are not available "
            f"here ({detail})")


class HeadMismatch(ValueError):
    """A head was asked to score embeddings of an encoder it was not trained on."""
