"""Imports every domain's tables so that one MetaData knows them all (Alembic, tests)."""

from sqlmodel import SQLModel

from app.activity import models as activity_models  # noqa: F401
from app.agents import models as agents_models  # noqa: F401
from app.alerts import models as alerts_models  # noqa: F401
from app.audit import models as audit_models  # noqa: F401
from app.billing import models as billing_models  # noqa: F401
from app.compliance import models as compliance_models  # noqa: F401
from app.exports import models as exports_models  # noqa: F401
from app.files import models as files_models  # noqa: F401
from app.mail import models as mail_models  # noqa: F401
from app.metrics import models as metrics_models  # noqa: F401
from app.orgs import models as orgs_models  # noqa: F401
from app.policies import models as policies_models  # noqa: F401
from app.reports import models as reports_models  # noqa: F401
from app.sso import models as sso_models  # noqa: F401
from app.usage import models as usage_models  # noqa: F401
from app.webhooks import models as webhooks_models  # noqa: F401

metadata = SQLModel.metadata
