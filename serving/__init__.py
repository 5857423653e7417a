"""Everything that talks to or starts Triton: the inference client, the bundled-server launcher
and its environment, and the python backend the bundled server runs."""
