module ciss.dev/schemas

go 1.26
