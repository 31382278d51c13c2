"""The two kinds of failure every command distinguishes (see README, "Command conventions")."""


class BadInput(Exception):
    """The user gave something unusable: a missing or malformed file, a bad option value.

    Commands report it as one line on stderr and exit with status 2. The message names the
    file (when there is one) and the problem.
    """

    def __init__(self, problem: str, path=None):
        self.problem, self.path = problem, path
        super().__init__(f"{path}: {problem}" if path is not None else problem)
