"""Errors that the CLI turns into one line and exit code 2 (torch-free, so the CLI imports it cheaply)."""


class DataNotFound(FileNotFoundError):
    """A dataset's files are missing; the message says where they were looked for and how to get them."""
