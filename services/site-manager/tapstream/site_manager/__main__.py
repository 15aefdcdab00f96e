"""`python -m tapstream.site_manager`: the site manager of TAPSTREAM_SITE, REST API on uvicorn."""

from tapstream.core.runner import run
from tapstream.site_manager.service import SiteManager
from tapstream.site_manager.settings import SiteManagerSettings

if __name__ == "__main__":
    run(SiteManager, SiteManagerSettings, "site-manager")
