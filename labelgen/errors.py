"""A user's mistakes, which every entry point says in one line and exits 2 on
(labelgen.cli); any other exception is a fault of the code or the machine, and says where
it came from."""


class UsageError(ValueError):
    """An argument, an input or a store that is not what the command needs: the message names
    it, says what is wrong and what to give instead."""


class MissingInput(FileNotFoundError):
    """A file, folder or store the user named is not there."""
