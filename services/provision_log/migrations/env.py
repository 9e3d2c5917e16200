from services.common.migrations_env import run
from services.provision_log.models import ProvisionLogBase

run(ProvisionLogBase.metadata)
