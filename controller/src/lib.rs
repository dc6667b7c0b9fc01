//! fedplane-controller (issue 5). Not built yet.
