"""Single sign-on with OpenID Connect (Authlib): per-organisation identity providers, verified email domains."""
