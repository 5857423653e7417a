"""Domain core shared by every dfmod process: settings, storage, preprocessing, policy, CLI."""
