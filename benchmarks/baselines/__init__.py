"""What a user would otherwise run, one file per stage; each is measured beside Questlog's stage in
the same `make bench` run."""
