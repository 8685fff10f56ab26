"""The admin UI at `/admin`: server-rendered pages (Jinja2, autoescaped) and plain HTML
forms over the admin API's own functions, behind a cookie session with CSRF tokens.
`routes.install` mounts it; `session` keeps sign-ins; `pages` checks every request."""
