"""The one exception of the BraTS data layer."""


class BratsError(ValueError):
    """A BraTS directory, file or slice cache that cannot be used as it is.

    The message always names the offending file or directory and says what was expected there.
    """
