"""The repository's own tooling: the flag-test doc, the README's compatibility table, the mutation report."""
