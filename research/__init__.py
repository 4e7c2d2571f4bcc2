"""Research code of the project (evaluation harness of the reconstruction experiments); ``engine`` never imports
it.  Importable with the repository's root on ``sys.path``, as the benchmarks, demos and tests do."""
