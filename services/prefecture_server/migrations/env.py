from services.common.migrations_env import run
from services.prefecture_server.models import PrefectureBase

run(PrefectureBase.metadata)
