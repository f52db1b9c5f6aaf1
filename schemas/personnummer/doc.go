// Package personnummer parses and validates Swedish personal identity numbers
// (personnummer) and coordination numbers (samordningsnummer).
//
// It owns the format rules and the check digit. It must never put a number, or any
// part of one, into an error message, a log line or a String method: callers echo
// errors to users and logs, and the number identifies a person.
package personnummer
