"""`python -m tapstream.site_manager`: the site manager of TAPSTREAM_SITE, REST API on uvicorn.
`python -m tapstream.site_manager token issue NAME --role admin`: a token in this host's token store
(the first admin's, before anyone can use the API)."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["token"]:
        from tapstream.cli.token import host_app

        host_app(args=sys.argv[2:], prog_name="python -m tapstream.site_manager token")
    else:
        from tapstream.core.runner import run
        from tapstream.site_manager.service import SiteManager
        from tapstream.site_manager.settings import SiteManagerSettings

        run(SiteManager, SiteManagerSettings, "site-manager")
