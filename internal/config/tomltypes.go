package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"

	"github.com/BurntSushi/toml"
)

// The decoder reports a value of the wrong type (a string for an
// integer) as a plain error, but what an Unmarshaler refuses as a
// toml.ParseError with the key and its position. So the config is first
// decoded into a shadow of rawConfig whose every value is one of the
// checkers below, each taking only its own type: a wrong type comes back
// with its line and key, from the decoder's own position data.
type (
	stringValue  struct{}
	intValue     struct{}
	boolValue    struct{}
	stringsValue struct{}
)

func (stringValue) UnmarshalTOML(v any) error { return wantType(v, "a string") }
func (intValue) UnmarshalTOML(v any) error    { return wantType(v, "an integer") }
func (boolValue) UnmarshalTOML(v any) error   { return wantType(v, "a boolean (true or false)") }

func (stringsValue) UnmarshalTOML(v any) error {
	list, ok := v.([]any)
	if !ok {
		return wantType(v, "a list")
	}
	for _, e := range list {
		if err := wantType(e, "a string"); err != nil {
			return err
		}
	}
	return nil
}

// wantType refuses v unless it is of the TOML type named want.
func wantType(v any, want string) error {
	if got := tomlTypeName(v); got != want {
		return fmt.Errorf("%s where %s belongs", got, want)
	}
	return nil
}

// tomlTypeName names a decoded TOML value's type as the docs do.
func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a number"
	case bool:
		return "a boolean (true or false)"
	case []any, []map[string]any:
		return "a list"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}

var (
	stringType  = reflect.TypeFor[string]()
	intType     = reflect.TypeFor[int]()
	boolType    = reflect.TypeFor[bool]()
	stringsType = reflect.TypeFor[[]string]()
)

// shadowOf is t with every value replaced by its checker, keeping the
// tables, lists of tables and keys.
func shadowOf(t reflect.Type) reflect.Type {
	switch {
	case t.Kind() == reflect.Pointer:
		return reflect.PointerTo(shadowOf(t.Elem()))
	case t == stringType:
		return reflect.TypeFor[stringValue]()
	case t == intType:
		return reflect.TypeFor[intValue]()
	case t == boolType:
		return reflect.TypeFor[boolValue]()
	case t == stringsType:
		return reflect.TypeFor[stringsValue]()
	case t.Kind() == reflect.Slice:
		return reflect.SliceOf(shadowOf(t.Elem()))
	case t.Kind() == reflect.Struct:
		var fields []reflect.StructField
		for i := range t.NumField() {
			f := t.Field(i)
			fields = append(fields, reflect.StructField{Name: f.Name, Type: shadowOf(f.Type), Tag: f.Tag})
		}
		return reflect.StructOf(fields)
	}
	panic(fmt.Sprintf("config: no TOML type check for %s", t))
}

var rawShadow = shadowOf(reflect.TypeFor[rawConfig]())

// decodeChecked decodes data into raw. A syntax error or a value of the
// wrong type comes back as "path:line: what" from the decoder's position
// data: the types are checked first, on the shadow of rawConfig.
func decodeChecked(path string, data []byte, raw *rawConfig) (toml.MetaData, error) {
	var syntax map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&syntax); err != nil {
		return toml.MetaData{}, positioned(path, err, false)
	}
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(reflect.New(rawShadow).Interface()); err != nil {
		return toml.MetaData{}, positioned(path, err, true)
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(raw)
	if err != nil {
		return md, positioned(path, err, true)
	}
	return md, nil
}

// positioned puts a decoder's error in file:line form, with the key when
// it is about a value.
func positioned(path string, err error, value bool) error {
	var pe toml.ParseError
	switch {
	case !errors.As(err, &pe):
		return fmt.Errorf("%s: %w", path, err)
	case value && pe.LastKey != "":
		return fmt.Errorf("%s:%d: %s: %s", path, pe.Position.Line, pe.LastKey, pe.Message)
	}
	return fmt.Errorf("%s:%d: %s", path, pe.Position.Line, pe.Message)
}
