"""The exceptions the core raises; the CLI turns them into one line on stderr and an exit code.

The core never prints or exits: it raises one of these with a message written for the
user (what is wrong and, where it helps, what to do).
"""


class ClaraWfError(Exception):
    """Base of every error clara-wf reports to the user."""

    exit_code = 1


class InputError(ClaraWfError):
    """Bad usage or bad input (a name, a file, a value): exit 2, nothing changed on disk."""

    exit_code = 2


class ProjectNotFound(InputError):
    """No clara-workflow chart around the current directory."""


class ExternalToolError(ClaraWfError):
    """helm, kubectl, docker or another program failed or is missing: exit 1."""


class WorkflowFailed(ClaraWfError):
    """A workflow run ended with a failed or timed-out stage: exit 1."""


class ClusterError(ClaraWfError):
    """The Kubernetes API refused or could not be reached: exit 1."""
