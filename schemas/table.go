package schemas

import (
	"fmt"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
)

// ColumnType is the logical type of a column.
type ColumnType string

// The column types of the model.
const (
	TypeKey   ColumnType = "key"   // participant key: 32 lowercase hex characters, derived on import
	TypeCode  ColumnType = "code"  // a code of CodeList
	TypeDate  ColumnType = "date"  // a calendar day
	TypeMonth ColumnType = "month" // a calendar month, stored as its first day
	TypeInt   ColumnType = "int"   // an integer within Min..Max
	TypeBool  ColumnType = "bool"  // true or false
)

// KeyColumn is the participant key column shared by every table.
const KeyColumn = "participant_key"

// Table is one table of the model.
type Table struct {
	Name    string    `yaml:"name"`
	Title   Text      `yaml:"title"`
	Key     []string  `yaml:"key"`
	Columns []*Column `yaml:"columns"`
}

// Column is one column of a table.
type Column struct {
	Name     string     `yaml:"name"`
	Type     ColumnType `yaml:"type"`
	CodeList string     `yaml:"codelist,omitempty"`
	Nullable bool       `yaml:"nullable,omitempty"`
	Min      *int       `yaml:"min,omitempty"`
	Max      *int       `yaml:"max,omitempty"`
	Title    Text       `yaml:"title"`
	Aliases  []string   `yaml:"aliases,omitempty"`
}

// Column returns the named column.
func (t *Table) Column(name string) (*Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return nil, false
}

// ColumnNames lists the columns in order.
func (t *Table) ColumnNames() []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = c.Name
	}
	return out
}

func (t *Table) check(s *Schema) error {
	if len(t.Columns) == 0 || t.Columns[0].Name != KeyColumn || t.Columns[0].Type != TypeKey {
		return fmt.Errorf("the first column must be %s of type key", KeyColumn)
	}
	seen := map[string]bool{}
	for _, c := range t.Columns {
		for _, n := range append([]string{c.Name}, c.Aliases...) {
			if seen[n] {
				return fmt.Errorf("column name or alias %q used twice", n)
			}
			seen[n] = true
		}
		switch c.Type {
		case TypeCode:
			if _, ok := s.CodeLists[c.CodeList]; !ok {
				return fmt.Errorf("column %s: unknown code list %q", c.Name, c.CodeList)
			}
		case TypeInt:
			if c.Min == nil || c.Max == nil {
				return fmt.Errorf("column %s: int needs min and max", c.Name)
			}
		case TypeKey, TypeDate, TypeMonth, TypeBool:
		default:
			return fmt.Errorf("column %s: unknown type %q", c.Name, c.Type)
		}
		if c.Title.SV == "" || c.Title.EN == "" {
			return fmt.Errorf("column %s: title needs sv and en", c.Name)
		}
	}
	for _, k := range t.Key {
		if c, ok := t.Column(k); !ok || c.Nullable {
			return fmt.Errorf("key column %s must exist and be non-nullable", k)
		}
	}
	return nil
}

// SQLType is the DuckDB type of the column.
func (c *Column) SQLType() string {
	switch c.Type {
	case TypeDate, TypeMonth:
		return "DATE"
	case TypeInt:
		return "SMALLINT"
	case TypeBool:
		return "BOOLEAN"
	default:
		return "VARCHAR"
	}
}

// ArrowType is the Arrow type of the column.
func (c *Column) ArrowType() arrow.DataType {
	switch c.Type {
	case TypeDate, TypeMonth:
		return arrow.FixedWidthTypes.Date32
	case TypeInt:
		return arrow.PrimitiveTypes.Int16
	case TypeBool:
		return arrow.FixedWidthTypes.Boolean
	default:
		return arrow.BinaryTypes.String
	}
}

// ArrowSchema is the table's Arrow schema, with the schema version in its metadata.
func (t *Table) ArrowSchema() *arrow.Schema {
	fields := make([]arrow.Field, len(t.Columns))
	for i, c := range t.Columns {
		fields[i] = arrow.Field{Name: c.Name, Type: c.ArrowType(), Nullable: c.Nullable}
	}
	md := arrow.NewMetadata([]string{"samsyn.schema_version", "samsyn.table"}, []string{fmt.Sprint(Version), t.Name})
	return arrow.NewSchema(fields, &md)
}

// DDL is the CREATE TABLE statement for the table. Keys are enforced by the importer (the
// only writer), not by a DuckDB index, which would cost memory on every node.
func (t *Table) DDL() string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE %s (\n", t.Name)
	for i, c := range t.Columns {
		fmt.Fprintf(&b, "  %s %s", c.Name, c.SQLType())
		if !c.Nullable {
			b.WriteString(" NOT NULL")
		}
		if i < len(t.Columns)-1 {
			b.WriteString(",")
		}
		b.WriteString("\n")
	}
	b.WriteString(")")
	return b.String()
}

// Resolve maps an import header (a column name or alias, any case, surrounding spaces
// ignored) to the column.
func (t *Table) Resolve(header string) (*Column, bool) {
	h := strings.ToLower(strings.TrimSpace(header))
	for _, c := range t.Columns {
		if c.Name == h {
			return c, true
		}
		for _, a := range c.Aliases {
			if a == h {
				return c, true
			}
		}
	}
	return nil, false
}
