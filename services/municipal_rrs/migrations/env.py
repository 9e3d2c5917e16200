from services.common.migrations_env import run
from services.municipal_rrs.models import RrsBase

run(RrsBase.metadata)
