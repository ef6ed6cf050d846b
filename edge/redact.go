package edge

import (
	"net/url"
	"regexp"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// redacted replaces a secret string.
const redacted = "[REDACTED]"

// redact removes secrets from m, in place, so that the configuration can be
// shown (GetConfig). The rules, most principled first:
//
//  1. A field whose options carry debug_redact = true is secret: the schema
//     says so, as protobuf's own text formats honour. A string (or each
//     string of a list or map) becomes "[REDACTED]"; any other value is
//     cleared. New secret fields in config.proto must carry debug_redact.
//  2. A net for fields the schema forgot to mark: a string field (single,
//     repeated, or a map's values) whose snake_case name holds a word that
//     names a credential (secret, password, passwd, token, credential(s),
//     apikey, or the pairs api_key, private_key, access_key), unless its
//     last word says it holds where a secret is rather than the secret
//     (file, path, dir, env, ref, name, header): "client_secret" and
//     "bearer_token" are redacted, "token_file" and "key_file" are not: a
//     path is not a secret, and seeing it helps.
//  3. A value keyed by a credential name: a message with string fields
//     "name" and "value" (metadata to set on requests), or a string map
//     entry, whose name is authorization, proxy-authorization, cookie,
//     set-cookie, or holds a word of rule 2 ("x-api-key", "x-auth-token").
//  4. In every other string, the password of a URL's user info
//     ("https://user:PASSWORD@host") becomes "[REDACTED]".
func redact(m protoreflect.Message) {
	md := m.Descriptor()
	var nameFD, valueFD protoreflect.FieldDescriptor
	if f := md.Fields().ByName("name"); f != nil && f.Kind() == protoreflect.StringKind && f.Cardinality() != protoreflect.Repeated {
		if v := md.Fields().ByName("value"); v != nil && v.Kind() == protoreflect.StringKind && v.Cardinality() != protoreflect.Repeated {
			nameFD, valueFD = f, v
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case debugRedact(fd):
			if !redactStrings(m, fd, v) {
				m.Clear(fd)
			}
		case fd.IsMap():
			mv := v.Map()
			secretField := secretName(string(fd.Name()))
			mv.Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
				switch {
				case fd.MapValue().Message() != nil:
					redact(e.Message())
				case fd.MapValue().Kind() == protoreflect.StringKind:
					if secretField || secretKey(k.String()) {
						mv.Set(k, protoreflect.ValueOfString(redacted))
					} else {
						mv.Set(k, protoreflect.ValueOfString(redactURL(e.String())))
					}
				}
				return true
			})
		case fd.Message() != nil && fd.IsList():
			l := v.List()
			for i := range l.Len() {
				redact(l.Get(i).Message())
			}
		case fd.Message() != nil:
			redact(v.Message())
		case fd.Kind() == protoreflect.StringKind:
			secret := secretName(string(fd.Name())) ||
				(fd == valueFD && secretKey(m.Get(nameFD).String()))
			if secret {
				redactStrings(m, fd, v)
			} else {
				mapStrings(m, fd, v, redactURL)
			}
		}
		return true
	})
}

// debugRedact reports whether fd's options carry debug_redact = true.
func debugRedact(fd protoreflect.FieldDescriptor) bool {
	o, ok := fd.Options().(*descriptorpb.FieldOptions)
	return ok && o.GetDebugRedact()
}

// redactStrings replaces every string of field fd (single, list or map
// values) with redacted; false when fd does not hold strings.
func redactStrings(m protoreflect.Message, fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
	switch {
	case fd.IsMap():
		if fd.MapValue().Kind() != protoreflect.StringKind {
			return false
		}
	case fd.Kind() != protoreflect.StringKind:
		return false
	}
	mapStrings(m, fd, v, func(string) string { return redacted })
	return true
}

// mapStrings replaces each string s of field fd (single, list or map values,
// which must be strings) with f(s).
func mapStrings(m protoreflect.Message, fd protoreflect.FieldDescriptor, v protoreflect.Value, f func(string) string) {
	switch {
	case fd.IsMap():
		mv := v.Map()
		mv.Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
			mv.Set(k, protoreflect.ValueOfString(f(e.String())))
			return true
		})
	case fd.IsList():
		l := v.List()
		for i := range l.Len() {
			l.Set(i, protoreflect.ValueOfString(f(l.Get(i).String())))
		}
	default:
		m.Set(fd, protoreflect.ValueOfString(f(v.String())))
	}
}

// secretWords are the words of a field or header name that name a
// credential.
var secretWords = map[string]bool{
	"secret": true, "secrets": true, "password": true, "passwd": true,
	"token": true, "tokens": true, "credential": true, "credentials": true,
	"apikey": true,
}

// secretPairs are two-word names of credentials.
var secretPairs = map[string]bool{"api_key": true, "private_key": true, "access_key": true}

// referenceWords end the names of fields that say where a secret is.
var referenceWords = map[string]bool{
	"file": true, "path": true, "dir": true, "env": true, "ref": true, "name": true, "header": true,
}

// secretName reports whether a snake_case (or kebab-case) name names a
// secret value by rule 2 of redact.
func secretName(name string) bool {
	words := strings.FieldsFunc(strings.ToLower(name), func(r rune) bool { return r == '_' || r == '-' || r == '.' })
	if len(words) == 0 || referenceWords[words[len(words)-1]] {
		return false
	}
	for i, w := range words {
		if secretWords[w] {
			return true
		}
		if i > 0 && secretPairs[words[i-1]+"_"+w] {
			return true
		}
	}
	return false
}

// credentialHeaders carry credentials whatever their words.
var credentialHeaders = map[string]bool{
	"authorization": true, "proxy-authorization": true, "cookie": true, "set-cookie": true,
}

// secretKey reports whether a metadata or header name carries a credential
// (rule 3 of redact).
func secretKey(name string) bool {
	n := strings.ToLower(name)
	if credentialHeaders[n] {
		return true
	}
	words := strings.FieldsFunc(n, func(r rune) bool { return r == '_' || r == '-' || r == '.' })
	for i, w := range words {
		if secretWords[w] || w == "auth" && i+1 < len(words) && words[i+1] == "token" {
			return true
		}
		if i > 0 && secretPairs[words[i-1]+"_"+w] {
			return true
		}
	}
	return false
}

// userinfo finds a URL with a password in its user info.
var userinfo = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@`)

// redactURL replaces the password of URLs' user info in s (rule 4).
func redactURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return userinfo.ReplaceAllStringFunc(s, func(prefix string) string {
		u, err := url.Parse(prefix + "host")
		if err != nil || u.User == nil {
			return prefix
		}
		if _, ok := u.User.Password(); !ok {
			return prefix
		}
		scheme, rest, _ := strings.Cut(prefix, "://")
		user, _, _ := strings.Cut(rest, ":")
		return scheme + "://" + user + ":" + redacted + "@"
	})
}
