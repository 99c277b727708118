"""One module per subcommand of `tune-smpl`: each has `add_parser(sub)` and `run(args)`."""
