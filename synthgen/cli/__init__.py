"""The command line: typer commands, one file per verb group, registered only by cli/main.
Thin functions: what a library user would need lives in the packages below."""
