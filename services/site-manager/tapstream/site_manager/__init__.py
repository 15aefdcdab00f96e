"""tapstream site manager: the data services manager of a site."""
