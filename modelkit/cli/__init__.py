"""The Typer CLI: thin verbs over the library."""
