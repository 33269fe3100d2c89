"""The GraphQL assembly: root types, context, errors, scalars, pagination and limits."""
