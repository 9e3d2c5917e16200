from services.common.migrations_env import run
from services.national_server import bulk_models  # noqa: F401  (registers the bulk tables on NationalBase)
from services.national_server import jpki_models  # noqa: F401  (registers the JPKI tables on NationalBase)
from services.national_server.models import NationalBase

run(NationalBase.metadata)
