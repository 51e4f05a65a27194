"""OCI API-key credentials as a Prefect block: the key is a secret, unwrapped only for the SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class OciCredentials(Block):
    """An OCI API signing key (user, tenancy, fingerprint, region, key) or a config profile."""

    _block_type_name = "OCI Credentials"
    _block_type_slug = "oci-credentials"
    _description = (
        "API signing key for Oracle Cloud Infrastructure. Fill in user/tenancy/fingerprint/"
        "region/private_key, or leave them empty and name a profile of an OCI config file."
    )

    user: str | None = Field(default=None, description="User OCID.")
    tenancy: str | None = Field(default=None, description="Tenancy OCID.")
    fingerprint: str | None = Field(default=None, description="Fingerprint of the API key.")
    region: str | None = Field(default=None, description="Region, e.g. ap-chuncheon-1.")
    private_key: SecretStr | None = Field(default=None, description="PEM text of the API key.")
    passphrase: SecretStr | None = Field(default=None, description="Passphrase of the key.")
    profile: str | None = Field(
        default=None, description="Profile in the OCI config file (used when no private_key)."
    )
    config_file: str | None = Field(
        default=None, description="OCI config file path (default ~/.oci/config)."
    )

    def oci_config(self) -> dict[str, Any]:
        """Return the SDK config dict; the only place the key and passphrase are unwrapped."""
        import oci  # imported here so that loading the block does not pull in the whole SDK

        if self.private_key is None:
            config = oci.config.from_file(
                str(Path(self.config_file or oci.config.DEFAULT_LOCATION).expanduser()),
                self.profile or oci.config.DEFAULT_PROFILE,
            )
            if self.region:  # let the block pin the region even when the file names another
                config["region"] = self.region
        else:
            config = {
                "user": self.user,
                "tenancy": self.tenancy,
                "fingerprint": self.fingerprint,
                "region": self.region,
                "key_file": None,
                "key_content": self.private_key.get_secret_value(),
                "pass_phrase": self.passphrase.get_secret_value() if self.passphrase else None,
            }
        missing = [k for k in ("user", "tenancy", "fingerprint", "region") if not config.get(k)]
        if missing:
            raise ValueError(f"OCI credentials are missing {', '.join(missing)}")
        oci.config.validate_config(config)
        return config
